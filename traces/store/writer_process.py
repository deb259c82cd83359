"""The history's writer process: ``python -m traces.store.writer_process``, started by a server's
``ProcessSink`` (``traces.store.sinks``).

It reads the server's hello (its database settings and retry delays), sets Django up with them
(a test database included) before anything imports a model, says it is ready, then stores the
batches it is sent with ``traces.store.writer.Writer`` and answers each, in order, until the
server closes the pipe. Batches already waiting on the pipe when one is read are stored with it
in one transaction (under load, one commit, an fsync on MariaDB, for several batches) and
answered one by one.
"""

from __future__ import annotations

import io
import logging
import os
import select
import signal
import sys
from typing import IO, Any

# The history's only writer on SQLite keeps more of the database in memory (64 MiB instead of
# 2 MiB: the indexes of runs and events are written at random places as traces interleave) and
# copies its write-ahead log back into the database every 10,000 pages instead of 1,000 (a page
# written many times between two checkpoints is copied once).
SQLITE_WRITER_PRAGMAS = "PRAGMA cache_size=-65536;PRAGMA wal_autocheckpoint=10000"
MERGE = 16  # batches already waiting on the pipe, stored in one transaction

logger = logging.getLogger(__name__)


def main() -> None:
    # The pipe to the server is this process's stdout: anything else printed goes to stderr.
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    requests = os.fdopen(0, "rb", buffering=0)  # unbuffered: what select() says is waiting is all there is
    # The server drains through this process when it stops: only the pipe closing stops it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tracesite.settings")
    from traces.store.pipe import read_frame

    try:
        hello = read_frame(requests)
    except EOFError:
        sys.exit("the server closed the pipe before its hello")
    from django.conf import settings

    database = hello["database"]
    if database["ENGINE"].endswith("sqlite3"):
        options = database.setdefault("OPTIONS", {})
        options["init_command"] = ";".join(filter(None, [options.get("init_command"), SQLITE_WRITER_PRAGMAS]))
    settings.DATABASES["default"] = database
    import django

    django.setup()
    from traces import gctune
    from traces.store.pipe import frame
    from traces.store.writer import Writer

    gctune.tune(settings.TRACE_GC_THRESHOLD)
    answers.write(frame(("ready", os.getpid())))
    answers.flush()
    serve(requests, answers, Writer(hello["retry_delays"]))


def serve(requests: IO[bytes], answers: IO[bytes], writer: Any) -> None:
    """Store the batches that come on ``requests``; answer each on ``answers``, in order."""
    from traces.store.pipe import frame, read_frame
    from traces.store.writer import Batch, Numbered, Outcome

    closed = False
    while not closed:
        try:
            messages = [read_frame(requests)]
        except EOFError:
            return  # the server closed the pipe: it has stopped
        while len(messages) < MERGE and _waiting(requests):
            try:
                messages.append(read_frame(requests))
            except EOFError:
                closed = True  # store what came before the end, then stop
                break
        # Each message's traces, to answer for it whatever happens below.
        traces = [{event[0] for event in message[1]} for message in messages]
        try:
            merged = Batch([])
            for _, events, origins, recovering in messages:
                merged.events.extend(Numbered(*event) for event in events)
                merged.origins.update(origins)
                merged.recovering = merged.recovering or recovering
            outcome = writer.store(merged) if merged.events else Outcome()
            answered = [
                (
                    ids & outcome.stored,
                    {i: (str(f.kind), f.reason) for i, f in outcome.failed.items() if i in ids},
                )
                for ids in traces
            ]
        except Exception as exc:  # a bug, not the database: these batches' traces fail, the process goes on
            logger.exception("history writer process: a batch could not be stored")
            reason = ("refused", f"{type(exc).__name__}: {exc}")
            answered = [(set(), dict.fromkeys(ids, reason)) for ids in traces]
        for stored, failed in answered:
            answers.write(frame(("stored", stored, failed)))
        answers.flush()


def _waiting(stream: IO[bytes]) -> bool:
    """More has arrived on the pipe already (never for a stream that is not a pipe)."""
    try:
        return bool(select.select([stream.fileno()], [], [], 0)[0])
    except (OSError, ValueError, io.UnsupportedOperation):
        return False


if __name__ == "__main__":
    main()
