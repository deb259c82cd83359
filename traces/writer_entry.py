"""The writer process's entry point (``python -m traces.writer_entry``, started by ``traces.writer``).

Django is set up with the server's own database settings (a test database included) before
anything imports a model; then the process stores the batches it is sent until the server closes
the pipe.
"""

from __future__ import annotations

import os
import signal

# The history's only writer on SQLite keeps more of the database in memory (64 MiB instead of
# 2 MiB: the indexes of runs and events are written at random places as traces interleave) and
# copies its write-ahead log back into the database every 10,000 pages instead of 1,000 (a page
# written many times between two checkpoints is copied once). docs/benchmarks.md has the figures.
SQLITE_WRITER_PRAGMAS = "PRAGMA cache_size=-65536;PRAGMA wal_autocheckpoint=10000"


def main() -> None:
    # The pipe to the server is this process's stdout: anything else printed goes to stderr.
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    requests = os.fdopen(0, "rb", buffering=0)  # unbuffered: what select() says is waiting is all there is
    # The server drains through this process when it stops: only the pipe closing stops it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tracesite.settings")
    import pickle
    import struct

    def exactly(size: int) -> bytes:
        data = b""
        while len(data) < size:
            more = requests.read(size - len(data))
            if not more:
                raise SystemExit("the server closed the pipe before its hello")
            data += more
        return data

    header = struct.Struct("!I")
    (size,) = header.unpack(exactly(header.size))
    hello = pickle.loads(exactly(size))
    from django.conf import settings

    settings.DATABASES["default"] = hello["database"]
    if hello["database"]["ENGINE"].endswith("sqlite3"):
        options = hello["database"].setdefault("OPTIONS", {})
        options["init_command"] = ";".join(filter(None, [options.get("init_command"), SQLITE_WRITER_PRAGMAS]))
    import django

    django.setup()
    from traces import gctune, writer

    gctune.tune(settings.TRACE_GC_THRESHOLD)
    writer.ready(answers, hello)
    writer.serve(requests, answers)


if __name__ == "__main__":
    main()
