"""SIGTERM as a clean stop: inputs end, sinks write what they hold, the process exits 0.

Bytewax 0.21.1 does nothing of its own on SIGTERM: Python's default action
kills the process at once (exit 143), and no sink's ``close()`` runs, so rows
buffered in the lake sinks are lost. With :func:`install`, SIGTERM only sets
a flag; the flow's sources see it (:func:`requested`) and end their
partitions, so the dataflow winds down as at the end of its input: stateful
steps get their end of input, every sink partition is closed (the lake sinks
flush), Bytewax takes its last snapshot when recovering, and ``bytewax.run``
returns normally. Windows still open are kept in state, not emitted: a stop is
not the end of the stream.

>>> requested()
False
"""

from __future__ import annotations

import contextlib
import faulthandler
import io
import logging
import signal
import threading

__all__ = ["install", "request", "requested"]

log = logging.getLogger("cityvitals.shutdown")
_STOP = threading.Event()


def request() -> None:
    """Ask the flow to stop cleanly (what SIGTERM does)."""
    if not _STOP.is_set():
        log.info("stop requested: ending the inputs and flushing the sinks")
    _STOP.set()


def requested() -> bool:
    """Whether a clean stop was asked for."""
    return _STOP.is_set()


def install() -> None:
    """Make SIGTERM a clean stop, and SIGUSR1 print every thread's stack (to stderr).

    Only the main thread may set handlers; elsewhere this does nothing.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: request())
        with contextlib.suppress(io.UnsupportedOperation, ValueError):  # stderr not a file
            faulthandler.register(signal.SIGUSR1, all_threads=True)
