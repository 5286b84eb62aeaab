"""A batch of closed indicator values, read by rows.

The evaluator and the scorer both take the values of the windows a shard just
closed, which come in runs of one indicator, and read a few columns at the rows
they need; both order entities with a null one first, as Polars sorts.
"""

from __future__ import annotations

import numpy as np
import polars as pl

__all__ = ["column_at", "indicator_runs", "null_first"]


def indicator_runs(values: pl.DataFrame) -> tuple[list[str], np.ndarray]:
    """The indicator id of each run of ``values`` (consecutive rows of one indicator),
    and the runs' lengths.

    >>> names, lengths = indicator_runs(pl.DataFrame({"indicator_id": ["a", "a", "b", "a"]}))
    >>> names, lengths.tolist()
    (['a', 'b', 'a'], [2, 1, 1])
    """
    runs = values.get_column("indicator_id").rle().struct.unnest()
    return runs.get_column("value").to_list(), runs.get_column("len").to_numpy()


def column_at(frame: pl.DataFrame, name: str, rows: np.ndarray) -> list:
    """Column ``name`` of ``frame`` at ``rows`` (ascending, distinct), as a list; read as
    a slice when the rows are one.

    >>> frame = pl.DataFrame({"x": ["a", "b", "c", "d"]})
    >>> column_at(frame, "x", np.array([1, 2])), column_at(frame, "x", np.array([0, 3]))
    (['b', 'c'], ['a', 'd'])
    """
    col = frame.get_column(name)
    if len(rows) and int(rows[-1]) - int(rows[0]) + 1 == len(rows):
        return col.slice(int(rows[0]), len(rows)).to_list()
    return col.gather(rows).to_list()


def null_first(text: str | None) -> tuple[bool, str]:
    """A sort key that puts None first, as Polars sorts nulls.

    >>> sorted(["b", None, "a"], key=null_first)
    [None, 'a', 'b']
    """
    return text is not None, text or ""
