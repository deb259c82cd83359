"""Loaded by pytest before Django is set up (``-p tests.environment`` in pyproject.toml).

Each test run gets a fresh data directory (the SQLite files, the demo database) and never
reads the developer's ``.env``, so tests see exactly the environment the command gave them.
"""

import os
import tempfile

os.environ.setdefault("TRACESITE_DATA_DIR", tempfile.mkdtemp(prefix="tracesite-test-"))
os.environ.setdefault("TRACESITE_ENV_FILE", "")
# Tests in this process store on the recorder's thread (their transactions hold what a writer
# process could not see); the servers they start (tests/servers.py) use the writer process.
os.environ.setdefault("TRACE_WRITER_PROCESS", "false")
