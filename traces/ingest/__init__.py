"""Other agents' traces: OTLP/HTTP exports decoded (``otlp``, ``decoding``), each span read as a run
of the tree (``spans``), and recorded as events through the store like the built-in agent's
(``ingestor``). docs/ingest.md has the details."""
