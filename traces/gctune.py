"""Python's garbage collector, set for a server that allocates a lot and keeps little of it.

A server allocates a few dozen short-lived objects for every event (envelopes, rows, futures)
and keeps the state of every live trace. With Python's default thresholds (700, 10, 10) the
collector runs every few hundred events, and its full collections walk every object the process
holds (Django, the modules, every live trace). So the server, and its history writer process,
once set up:

- move what start-up made (modules, models, URL patterns) out of the collector's sight
  (``gc.freeze``): it is never garbage;
- collect the youngest generation every ``TRACE_GC_THRESHOLD`` allocations (default 50,000),
  and the older ones as Python does after that many of those. Reference counting still frees
  everything that is not in a cycle at once; only cycles wait a little longer.

``TRACE_GC_THRESHOLD=0`` leaves Python's defaults.
"""

from __future__ import annotations

import gc

OLDER = (10, 10)  # as Python does


def tune(threshold: int) -> None:
    if threshold <= 0:
        return
    gc.collect()
    gc.freeze()
    gc.set_threshold(threshold, *OLDER)
