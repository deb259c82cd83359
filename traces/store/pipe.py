"""Messages on the pipe between a server and its writer process: pickled, each after its length.

Imports nothing of Django: the writer process reads its hello with it before Django is set up.
"""

from __future__ import annotations

import pickle
import struct
from typing import IO, Any

HEADER = struct.Struct("!I")


def frame(message: Any) -> bytes:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(body)) + body


def read_frame(stream: IO[bytes]) -> Any:
    """One framed message from a blocking stream (the writer process's side of the pipe)."""
    (size,) = HEADER.unpack(_exactly(stream, HEADER.size))
    return pickle.loads(_exactly(stream, size))


def _exactly(stream: IO[bytes], size: int) -> bytes:
    """``size`` bytes from a pipe (an unbuffered read returns what has arrived so far)."""
    data = stream.read(size)
    if data is None or len(data) < size:
        parts = [data or b""]
        got = len(parts[0])
        while got < size:
            more = stream.read(size - got)
            if not more:
                raise EOFError("the pipe closed")
            parts.append(more)
            got += len(more)
        data = b"".join(parts)
    return data
