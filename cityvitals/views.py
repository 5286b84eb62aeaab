"""The analysts' DuckDB views and macros, kept in ``cityvitals/views.sql``.

:class:`cityvitals.lake.Lake` writes them into the lake's DuckDB file after
the table views, so they read what the table views read: the Parquet files
complete when a query starts. The notebooks and ``cityvitals report`` query
them by name; the SQL lives only in ``views.sql``.

>>> [name for name, _ in objects()][:4]
['utc_day', 'severity_rank', 'severity_of', 'latest_values']
>>> import duckdb
>>> con = duckdb.connect()
>>> for stmt in statements()[:3]:  # the macros; the views need the table views
...     _ = con.execute(stmt)
>>> con.execute("SELECT severity_rank('orange'), severity_of(4)").fetchone()
(3, 'red')
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


def sql() -> str:
    """The whole file, with ``{SEVERITIES}`` filled in (what the lake's stamp hashes)."""
    severities = "[" + ", ".join(f"'{s}'" for s in SEVERITIES) + "]"
    return SQL_PATH.read_text(encoding="utf-8").replace("{SEVERITIES}", severities)


def statements() -> list[str]:
    """The ``CREATE`` statements, in order (a macro comes before what uses it)."""
    parts = re.split(r"^;\s*$", sql(), flags=re.MULTILINE)
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


def install(con: duckdb.DuckDBPyConnection) -> None:
    """Create every view and macro on ``con`` (which must hold the table views)."""
    for stmt in statements():
        con.execute(stmt)
