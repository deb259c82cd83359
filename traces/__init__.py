__version__ = "0.1.0"  # the server version sent in connection_established and /health
