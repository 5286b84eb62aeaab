"""The analysts' DuckDB views and macros, kept in ``cityvitals/views.sql``.

:class:`cityvitals.lake.Lake` writes them into the lake's DuckDB file after
the table views, so they read what the table views read: the Parquet files
complete when a query starts. The notebooks and ``cityvitals report`` query
them by name; the SQL lives only in ``views.sql``.

>>> [name for name, _ in objects()][:5]
['utc_day', 'local_day', 'severity_rank', 'severity_of', 'latest_values']
>>> import duckdb
>>> con = duckdb.connect()
>>> for stmt in statements(offset_us=8 * 3_600_000_000)[:4]:  # the macros (not the views)
...     _ = con.execute(stmt)
>>> con.execute("SELECT severity_rank('orange'), severity_of(4)").fetchone()
(3, 'red')
>>> ts = "TIMESTAMPTZ '2026-05-12 17:00:00+00'"  # 01:00 on 13 May in Beijing
>>> [str(d) for d in con.execute(f"SELECT utc_day({ts}), local_day({ts})").fetchone()]
['2026-05-12', '2026-05-13']
"""

from __future__ import annotations

import re
from pathlib import Path

import duckdb

from schemas.families import SEVERITIES

__all__ = ["SQL_PATH", "VIEWS", "install", "objects", "sql", "statements"]

#: Where the views and macros are written.
SQL_PATH = Path(__file__).with_name("views.sql")

_NAME = re.compile(r"^CREATE (?:VIEW|MACRO) (\w+)", re.MULTILINE)


def sql(offset_us: int = 0) -> str:
    """The whole file, with ``{SEVERITIES}`` and ``{DAY_OFFSET_US}`` filled in (what the
    lake's stamp hashes); ``offset_us``: the UTC offset of the catalogue's time zone, where
    ``local_day`` turns (see :attr:`indicators.definitions.Catalog.window_offset_us`)."""
    severities = "[" + ", ".join(f"'{s}'" for s in SEVERITIES) + "]"
    text = SQL_PATH.read_text(encoding="utf-8").replace("{SEVERITIES}", severities)
    return text.replace("{DAY_OFFSET_US}", str(int(offset_us)))


def statements(offset_us: int = 0) -> list[str]:
    """The ``CREATE`` statements, in order (a macro comes before what uses it)."""
    parts = re.split(r"^;\s*$", sql(offset_us), flags=re.MULTILINE)
    return [p.strip() for p in parts if _NAME.search(p)]


def objects() -> list[tuple[str, str]]:
    """``(name, kind)`` of every view and macro, in order; kind is ``view`` or ``macro``."""
    out = []
    for stmt in statements():
        m = _NAME.search(stmt)
        out.append((m.group(1), "view" if " VIEW " in m.group(0) else "macro"))
    return out


#: The names of the views (not the macros).
VIEWS: tuple[str, ...] = tuple(name for name, kind in objects() if kind == "view")


def install(con: duckdb.DuckDBPyConnection, offset_us: int = 0) -> None:
    """Create every view and macro on ``con`` (which must hold the table views), days turning
    at ``offset_us`` (see :func:`sql`)."""
    for stmt in statements(offset_us):
        con.execute(stmt)
