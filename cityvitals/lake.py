"""The output lake: Parquet files by table and date, and a DuckDB file of views.

Layout under the output directory::

    lake/<table>/date=YYYY-MM-DD/part-<writer>-<seq>.parquet
    lake/<table>/_schema/empty.parquet       # keeps the views valid before data
    cityvitals.duckdb                        # views over the Parquet files

Besides one view per table, the DuckDB file holds ``department_rating``, the
five-colour rating of departments over ``indicator_values``
(:mod:`thresholds.rating`, configured by ``thresholds/rating.yaml`` unless
the lake is given another rating), and the analysts' views and macros of
:mod:`cityvitals.views` (``latest_values``, ``open_alerts``, ``alert_life`` ...).

Why views and not tables: the pipeline owns the Parquet files and never holds
the DuckDB file open. It writes the views once, in a short transaction at
start, and closes the file. Analysts can then open ``cityvitals.duckdb``
read-only at any time, from any number of processes, and never meet a lock
held by the pipeline; every query sees the files that were complete when it
started. A Parquet file appears atomically: it is written under a temporary
name in the same directory and renamed into place, so a reader never sees
half a file.

>>> import tempfile
>>> lake = Lake(tempfile.mkdtemp())
>>> lake.create()
>>> con = lake.connect()
>>> con.execute("select count(*) from breaches").fetchone()
(0,)
>>> con.execute("select count(*) from department_rating").fetchone()
(0,)
>>> con.execute("select count(*) from open_alerts").fetchone()
(0,)
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from datetime import date
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cityvitals import views
from indicators.definitions import Catalog, load_catalog
from schemas.families import OUTPUT_TABLES
from thresholds.rating import DEFAULT_RATING, RATING_VIEW, Rating, load_rating, rating_sql

__all__ = ["CLUSTER_BY", "PARTITION_COLUMN", "ROW_GROUP_ROWS", "Lake", "LakeError"]

#: The column each table is partitioned by date on.
PARTITION_COLUMN = {
    "indicator_values": "window_start",
    "breaches": "event_ts",
    "device_status": "event_ts",
    "order_deadlines": "event_ts",
    "risk_levels": "event_ts",
    "dead_letters": "received_at",
    "ingest_batches": "processed_at",
}

DB_NAME = "cityvitals.duckdb"

#: The order of the rows within each file of a table, and the rows per Parquet row group: a
#: query filtering on the leading column (``indicator_id = 'device.online_rate'``) reads only
#: the row groups whose min/max statistics can hold it (see BENCHMARKS.md, the views at 10M rows).
CLUSTER_BY = {"indicator_values": ("indicator_id", "entity_id", "window_start")}
ROW_GROUP_ROWS = 10_000


class LakeError(RuntimeError):
    """The lake or its DuckDB catalogue can't be used as asked."""


class Lake:
    """Paths and atomic writes of one output directory.

    ``rating`` configures the ``department_rating`` view: a :class:`Rating`,
    or the path of a rating file; by default ``thresholds/rating.yaml``. A file
    is checked against ``catalog``, the catalogue of the flow that writes the
    lake, when that computes the rating's two indicators: its periods then start
    at midnight in that catalogue's time zone, as the daily windows do, unless it
    names another. A flow whose catalogue lacks either has nothing to rate: the
    file is then checked against the default catalogue, as when no ``catalog`` is
    given. It is read when the views are written (:meth:`create`), so a bad file
    raises :class:`cityvitals.yamlconf.ConfigError` there. The analysts' views
    count days in ``catalog``'s time zone.
    """

    def __init__(
        self,
        root: Path | str,
        rating: Rating | Path | str | None = None,
        catalog: Catalog | None = None,
    ) -> None:
        self.root = Path(root)
        self._rating = rating
        self._catalog = catalog

    @property
    def rating(self) -> Rating:
        """The rating configuration of the ``department_rating`` view (loaded once)."""
        if not isinstance(self._rating, Rating):
            path = self._rating or DEFAULT_RATING
            catalog = self.catalog
            if not _rates_with(load_rating(path), catalog):
                catalog = load_catalog()
            self._rating = load_rating(path, catalog=catalog)
        return self._rating

    @property
    def catalog(self) -> Catalog:
        """The catalogue of the flow that writes the lake (by default the default one)."""
        if self._catalog is None:  # loaded once, when first needed
            self._catalog = load_catalog()
        return self._catalog

    @property
    def db_path(self) -> Path:
        return self.root / DB_NAME

    def table_dir(self, table: str) -> Path:
        if table not in OUTPUT_TABLES:
            raise LakeError(f"unknown table '{table}', expected one of {sorted(OUTPUT_TABLES)}")
        return self.root / "lake" / table

    def glob(self, table: str) -> str:
        return str(self.table_dir(table).resolve() / "*" / "*.parquet")

    def has_data(self) -> bool:
        """Whether any table holds a data file (not just its schema file)."""
        return any(
            p.parent.name != "_schema"
            for t in OUTPUT_TABLES
            for p in self.table_dir(t).glob("*/*.parquet")
        )

    def create(self) -> None:
        """Make the directories, schema files and DuckDB views (idempotent)."""
        for table, schema in OUTPUT_TABLES.items():
            empty = self.table_dir(table) / "_schema" / "empty.parquet"
            if not empty.exists():
                empty.parent.mkdir(parents=True, exist_ok=True)
                _atomic_write(schema.empty_table(), empty)
        self._create_views()

    def _create_views(self) -> None:
        """Write the views into a new file and rename it over the old one.

        Readers never wait: a session already open keeps the file it opened,
        a new one gets the new file, and nobody ever sees the write lock.
        """
        rating = rating_sql(self.rating)
        offset = self.catalog.window_offset_us
        stamp = _stamp(rating + views.sql(offset))
        if self._views_current(stamp):
            return
        # One temporary file per process: the processes of a cluster all start at once.
        tmp = self.db_path.with_name(f".{DB_NAME}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        con = duckdb.connect(str(tmp))
        try:
            for table in OUTPUT_TABLES:
                con.execute(
                    f"CREATE VIEW {table} AS SELECT * FROM read_parquet("
                    f"'{self.glob(table)}', union_by_name = true)"
                )
            con.execute(f"CREATE VIEW {RATING_VIEW} AS {rating}")
            con.execute(f"COMMENT ON VIEW {RATING_VIEW} IS '{stamp}'")
            views.install(con, offset)
            con.execute("CHECKPOINT")
        finally:
            con.close()
        os.replace(tmp, self.db_path)

    def clear(self) -> None:
        """Remove every data file, keeping the schema files and views valid throughout."""
        for table in OUTPUT_TABLES:
            for day in self.table_dir(table).glob("date=*"):
                shutil.rmtree(day)

    def _views_current(self, stamp: str) -> bool:
        """Whether the file has every table view over this lake's files, and the rating
        view of this configuration (its comment is ``stamp``, a hash of its SQL: DuckDB
        keeps a view's SQL reformatted, so the text itself can't be compared).
        """
        if not self.db_path.exists():
            return False
        try:
            con = duckdb.connect(str(self.db_path), read_only=True)
        except duckdb.Error:
            return False
        try:
            rows = con.execute(
                "select view_name, sql, comment from duckdb_views() where not internal"
            ).fetchall()
        finally:
            con.close()
        found = {name: sql for name, sql, _ in rows}
        comments = {name: comment for name, _, comment in rows}
        tables = all(t in found and self.glob(t) in found[t] for t in OUTPUT_TABLES)
        return tables and comments.get(RATING_VIEW) == stamp

    def connect(self) -> duckdb.DuckDBPyConnection:
        """A read-only DuckDB connection to the views, as an analyst opens it."""
        return duckdb.connect(str(self.db_path), read_only=True)

    def write(self, table: str, data: pa.Table, writer: str, seq: int) -> list[Path]:
        """Write ``data`` into ``table``, one atomic file per date; return the paths.

        Files are numbered ``seq``, ``seq + 1``, ... for this ``writer``.
        """
        if data.num_rows == 0:
            return []
        schema = OUTPUT_TABLES[table]
        data = data.select(schema.names).cast(schema)
        if table in CLUSTER_BY:
            data = data.sort_by([(c, "ascending") for c in CLUSTER_BY[table]])
        days = pc.cast(pc.cast(data[PARTITION_COLUMN[table]], pa.timestamp("us")), pa.date32())
        paths = []
        for n, day in enumerate(sorted(pc.unique(days).to_pylist()), start=seq):
            part = data.filter(pc.equal(days, pa.scalar(day, pa.date32())))
            path = self._part_path(table, day, writer, n)
            _atomic_write(part, path)
            paths.append(path)
        return paths

    def discard_from(self, table: str, writer: str, seq: int) -> list[Path]:
        """Delete ``writer``'s files of ``table`` numbered ``seq`` or above; return them.

        A writer resumed from a snapshot calls this: files written after the
        snapshot will be written again by the replay, so they must go first.
        """
        prefix = f"part-{_name_part(writer)}-"
        gone = []
        for path in self.table_dir(table).glob(f"date=*/{prefix}*.parquet"):
            number = path.name.removeprefix(prefix).removesuffix(".parquet")
            if number.isdigit() and int(number) >= seq:
                path.unlink()
                gone.append(path)
        return sorted(gone)

    def _part_path(self, table: str, day: date, writer: str, n: int) -> Path:
        name = f"part-{_name_part(writer)}-{n:06d}.parquet"
        return self.table_dir(table) / f"date={day.isoformat()}" / name


_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def _name_part(text: str) -> str:
    """``text`` if it is safe in a file name: no separators, no glob characters, no '..'.

    Writer names come from sink state (and, resumed, from a recovery store),
    so they are checked before they name or select a file.

    >>> _name_part("r3"), _name_part("20260512T060000-41-2")
    ('r3', '20260512T060000-41-2')
    >>> _name_part("../../etc")
    Traceback (most recent call last):
    ...
    ValueError: writer name '../../etc' is not a safe file name part (letters, digits, . _ -)
    """
    if not _SAFE.fullmatch(text) or ".." in text:
        raise ValueError(
            f"writer name {text!r} is not a safe file name part (letters, digits, . _ -)"
        )
    return text


def _stamp(sql: str) -> str:
    """What the rating view's comment says: a hash of the SQL of the rating and the
    analysts' views, so a change to either rewrites the file."""
    return "cityvitals rating sha256:" + hashlib.sha256(sql.encode("utf-8")).hexdigest()


def _rates_with(rating: Rating, catalog: Catalog) -> bool:
    """Whether ``catalog`` computes both indicators ``rating`` rates departments by."""
    ids = set(catalog.ids)
    return rating.timeliness.indicator in ids and rating.quality.indicator in ids


def _atomic_write(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp, compression="zstd", row_group_size=ROW_GROUP_ROWS)
    os.replace(tmp, path)
