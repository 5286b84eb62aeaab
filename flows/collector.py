"""The cyclic garbage collector's thresholds for a process that runs a flow.

Reference counting frees almost everything a flow allocates at once; the cyclic
collector only finds cycles. Python starts it after every 700 new container
objects (first threshold) and rescans everything that survived, the whole heap in
the oldest generation, every hundred such runs. A flow makes containers by the
hundred thousand: a Kafka message object per record, rows of tuples and dicts where
records leave the columnar path, Polars and Arrow wrappers. Measured on 300,000
events (``BENCHMARKS.md``), the collector took 220-244 ms of a 1.5 s Kafka run and
55 ms of a 0.9 s run from memory, almost all of it in full rescans of a heap that
held nothing to free.

:func:`tune` raises the first threshold to :data:`THRESHOLDS`'s 50,000: the
collector runs 70 times less often and each run still finds every cycle, so memory
is unchanged (a cycle waits at most 50,000 allocations longer). The bench sets the
same thresholds in every engine's process, the naive baseline's included.

>>> import gc
>>> before = tune()
>>> gc.get_threshold() == THRESHOLDS
True
>>> gc.set_threshold(*before)
"""

from __future__ import annotations

import gc

__all__ = ["THRESHOLDS", "tune"]

#: Thresholds of generations 0, 1 and 2 (Python's defaults: 700, 10, 10).
THRESHOLDS = (50_000, 10, 10)


def tune() -> tuple[int, int, int]:
    """Set :data:`THRESHOLDS` for this process; return the thresholds it had."""
    before = gc.get_threshold()
    gc.set_threshold(*THRESHOLDS)
    return before
