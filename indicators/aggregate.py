"""Per-batch partial aggregates: the columnar first half of every indicator.

A batch's validated frame becomes, per indicator, a small frame of partial
aggregates keyed by ``(entity_id, window_start)``. Partials merge by
addition (``n``, ``sum``, ``num``, ``den``), by ``min``/``max``, or by union
(``values``), or by latest time (``online_rate``: each device's last
heartbeat), so they can be computed where the data is and
combined later in keyed window state (:mod:`indicators.windows`). The
order-lifecycle measures keep one row per status change instead: their
state (:mod:`indicators.lifecycle`) joins each order's changes by order id.

In the flow, :class:`Aggregator` computes a batch's partials of all
indicators at once: the column indicators' rows are stacked and aggregated
by one ``group_by`` per kind, into one frame keyed also by ``indicator_id``
(see :func:`partials`); :func:`partial` is one indicator's, the reference.

Time inside is integer microseconds since the epoch (UTC); windows are
tumbling, and start at the instants :attr:`IndicatorDef.window_offset_us`
says (at local midnight of the catalogue's time zone for windows of a day).

>>> import polars as pl
>>> from datetime import datetime, UTC
>>> from indicators.definitions import load_catalog
>>> d = load_catalog()["fire.temperature"]
>>> f = pl.DataFrame({"ts": [datetime(2026, 5, 12, 6, m, s, tzinfo=UTC)
...                          for m, s in ((0, 1), (0, 2), (1, 1))],
...                   "metric": ["temperature"] * 3, "site_id": ["f1"] * 3,
...                   "value": [20.0, 24.0, 30.0]})
>>> p = partial(d, f).sort("window_start")
>>> p.select("entity_id", "n", "max").rows()
[('f1', 2, 24.0), ('f1', 1, 30.0)]
"""

from __future__ import annotations

from collections.abc import Callable

import polars as pl

from indicators.definitions import LIFECYCLE, Catalog, IndicatorDef

__all__ = [
    "COLUMNS",
    "COLUMN_KINDS",
    "ENGINE",
    "Aggregator",
    "kind",
    "partial",
    "partials",
    "shard_of",
    "split_by_shard",
    "ts_us",
    "window_start_us",
]


def ts_us(col: str = "ts") -> pl.Expr:
    """Microseconds since the epoch of a UTC datetime column."""
    return pl.col(col).dt.epoch("us")


def window_start_us(window_us: int, col: str = "ts", offset_us: int = 0) -> pl.Expr:
    """Start of the tumbling window holding each row, in epoch microseconds: windows start
    where the time plus ``offset_us`` is a multiple of ``window_us``.

    >>> from datetime import datetime, UTC
    >>> day, hour = 86_400_000_000, 3_600_000_000
    >>> f = pl.DataFrame({"ts": [datetime(2026, 5, 12, 17, tzinfo=UTC)]})  # 01:00 in Beijing
    >>> f.select(utc=window_start_us(day), beijing=window_start_us(day, offset_us=8 * hour)
    ...          ).select(pl.all().cast(pl.Datetime("us", "UTC"))).row(0)  # doctest: +ELLIPSIS
    (datetime.datetime(2026, 5, 12, 0, 0, tzinfo=...), datetime.datetime(2026, 5, 12, 16, 0, ...))
    """
    t = ts_us(col)
    return (t - (t + offset_us) % window_us).alias("window_start")


def _entity(d: IndicatorDef) -> pl.Expr:
    return _entity_of(tuple(d.entity.by)).alias("entity_id")


def _matches(filter_: dict[str, str]) -> pl.Expr:
    """Rows whose columns all equal the filter's values (a null never matches)."""
    return pl.all_horizontal([pl.col(k) == v for k, v in filter_.items()]).fill_null(False)


def _selection(d: IndicatorDef) -> tuple[pl.Expr, list[pl.Expr]]:
    """Which rows of its family ``d`` reads, and the columns it reads from them."""
    cond = _matches(d.where) if d.where else pl.lit(True)
    if d.aggregation in LIFECYCLE:
        # Per-order events stay rows: the order state machine needs each one.
        return cond & pl.col(d.field).is_not_null(), [
            _entity(d),
            window_start_us(d.window_us, offset_us=d.window_offset_us),
            pl.col(d.field).alias("order_id"),
            pl.col("status"),
            pl.col("event_class"),
            ts_us().alias("t"),
        ]
    if d.aggregation == "ratio":
        num, den = _matches(d.numerator), _matches(d.denominator)
        return cond & pl.col(d.field).is_not_null() & (num | den), [
            _entity(d),
            window_start_us(d.window_us, offset_us=d.window_offset_us),
            num.alias("num"),
            den.alias("den"),
        ]
    value = pl.col(d.field)
    if d.aggregation == "count":  # counts rows that have the field, whatever its type
        cond = cond & value.is_not_null()
        value = pl.lit(1.0)
    elif d.aggregation != "online_rate":
        value = value.cast(pl.Float64)
        if d.divide_by:
            value = value / pl.col(d.divide_by)
        cond = cond & value.is_not_null() & value.is_finite()
    extra = [pl.col("device_type")] if d.aggregation == "online_rate" else []
    return cond, [
        _entity(d),
        window_start_us(d.window_us, offset_us=d.window_offset_us),
        value.alias("v"),
        ts_us().alias("t"),
        *extra,
    ]


def _selected(d: IndicatorDef, frame: pl.LazyFrame) -> pl.LazyFrame:
    cond, columns = _selection(d)
    return frame.filter(cond).select(columns)


def partial(d: IndicatorDef, frame: pl.DataFrame) -> pl.DataFrame:
    """Partial aggregate of one indicator over one family frame.

    A ``ratio`` partial counts, per entity and window, the rows matching its
    numerator (``num``) and its denominator (``den``); a row may match both.

    >>> from datetime import datetime, UTC
    >>> from indicators.definitions import load_catalog
    >>> d = load_catalog()["workorder.closure_rate"]
    >>> f = pl.DataFrame({"ts": [datetime(2026, 5, 12, 6, m, tzinfo=UTC) for m in (1, 2, 3)],
    ...                   "order_id": ["a", "b", "a"], "district_id": ["D1"] * 3,
    ...                   "status": ["reported", "reported", "closed"]})
    >>> partial(d, f).select("entity_id", "num", "den").rows()
    [('D1', 1, 2)]
    """
    return _plan(d, frame.lazy()).collect(engine=ENGINE)


def _aggs(kind: str) -> list[pl.Expr]:
    """The partial columns of a kind of column aggregation (see :func:`kind`)."""
    if kind == "ratio":
        return [pl.col("num").sum().cast(pl.Int64), pl.col("den").sum().cast(pl.Int64)]
    aggs = [
        pl.len().cast(pl.Int64).alias("n"),
        pl.col("v").sum().alias("sum"),
        pl.col("v").min().alias("min"),
        pl.col("v").max().alias("max"),
    ]
    if kind == "p95":
        aggs.append(pl.col("v").alias("values"))
    return aggs


def kind(d: IndicatorDef) -> str:
    """How an indicator's partials look.

    ``columns`` (mean, max, min, sum, count: ``n``, ``sum``, ``min``,
    ``max``), ``p95`` (those and the ``values``), ``ratio`` (``num``,
    ``den``); the population indicators keep their own: ``online_rate``
    (each device's last heartbeat) and ``lifecycle`` (one row per change).

    >>> from indicators.definitions import load_catalog
    >>> cat = load_catalog()
    >>> kind(cat["fire.temperature"]), kind(cat["workorder.closure_rate"])
    ('columns', 'ratio')
    """
    if d.aggregation in LIFECYCLE:
        return "lifecycle"
    if d.aggregation in ("online_rate", "ratio", "p95"):
        return d.aggregation
    return "columns"


#: The Polars engine of the hot path's queries. Batches are small, and the in-memory
#: engine runs a small query about twice as fast as the streaming one (Polars 2's default).
ENGINE = "in-memory"

#: The optimisations of :meth:`Aggregator.partials`' queries: all but the search for
#: common subplans and subexpressions across them, which costs more than it saves on a
#: batch (the shared parts are cheap: filters of small frames, times in microseconds).
_OPTIMIZATIONS = pl.QueryOptFlags(comm_subplan_elim=False, comm_subexpr_elim=False)

#: The kinds of indicators whose partials merge column by column.
COLUMN_KINDS = ("columns", "p95", "ratio")

#: The key of :func:`partials`' frame of every column indicator's partials.
COLUMNS = "*columns"

#: How a batch's family frame becomes some indicators' rows (plans built once).
Recipe = Callable[[pl.LazyFrame], pl.LazyFrame]


def _joinable(d: IndicatorDef) -> bool:
    """Whether ``d``'s rows can be picked by :func:`_by_join`: a numeric column
    aggregation of the rows where one column has one value."""
    return kind(d) in ("columns", "p95") and d.aggregation != "count" and len(d.where) == 1


def _by_join(defs: list[IndicatorDef], ids: pl.Enum) -> Recipe:
    """The rows of several indicators that pick rows by the same column and read the
    same field, stacked by one join with a table of their choices.

    Each row of the family meets every indicator whose filter value it has; the
    entity, value and window are then chosen per indicator from the table (whose
    ``indicator_id`` is one of ``ids``).
    Same rows as :func:`_selected` of each, tagged as :func:`partials` stacks them.
    """
    (key,) = defs[0].where
    field = defs[0].field
    bys = list(dict.fromkeys(tuple(d.entity.by) for d in defs))
    divs = list(dict.fromkeys(d.divide_by for d in defs))
    table = pl.DataFrame(
        {
            key: [d.where[key] for d in defs],
            "indicator_id": [d.id for d in defs],
            "_w": [d.window_us for d in defs],
            "_by": [bys.index(tuple(d.entity.by)) for d in defs],
            "_div": [divs.index(d.divide_by) for d in defs],
        },
        schema_overrides={"indicator_id": ids, "_w": pl.Int64, "_by": pl.Int32, "_div": pl.Int32},
    ).lazy()
    entity = _choice("_by", [_entity_of(by) for by in bys])
    raw = pl.col(field).cast(pl.Float64)
    value = _choice("_div", [raw if div is None else raw / pl.col(div) for div in divs])
    t, offset = ts_us(), defs[0].window_offset_us  # the defs are grouped by their offset
    start = t - (t + offset) % pl.col("_w")
    picked = [
        pl.col("indicator_id"),
        entity.alias("entity_id"),
        start.alias("window_start"),
        pl.col("_w"),
        value.alias("v"),
    ]
    usable = pl.col("v").is_not_null() & pl.col("v").is_finite()
    tagged = [*_TAGGED, (pl.col("window_start") + pl.col("_w")).alias("_end"), pl.col("v")]
    on = pl.col(key).cast(pl.String)

    def rows(frame: pl.LazyFrame) -> pl.LazyFrame:
        return (
            frame.join(table, left_on=on, right_on=key).select(picked).filter(usable).select(tagged)
        )

    return rows


_TAGGED = [pl.col("indicator_id"), pl.col("entity_id"), pl.col("window_start")]


def _stacked(d: IndicatorDef, ids: pl.Enum) -> Recipe:
    """``d``'s rows, tagged with its id (one of ``ids``) and window end, to stack with
    others of its kind."""
    cond, columns = _selection(d)
    values = ("num", "den") if kind(d) == "ratio" else ("v",)
    tagged = [
        pl.lit(d.id, dtype=ids).alias("indicator_id"),
        pl.col("entity_id"),
        pl.col("window_start"),
        (pl.col("window_start") + d.window_us).alias("_end"),
        *(pl.col(c) for c in values),
    ]
    return lambda frame: frame.filter(cond).select(columns).select(tagged)


def _population_plan(d: IndicatorDef) -> Recipe:
    cond, columns = _selection(d)
    if d.aggregation in LIFECYCLE:
        return lambda frame: frame.filter(cond).select(columns)
    keys = [pl.col("entity_id"), pl.col("window_start"), pl.col("v").alias("device")]
    last = [pl.col("t").max(), pl.col("device_type").last()]  # each device's last heartbeat
    return lambda frame: frame.filter(cond).select(columns).group_by(keys).agg(last)


def _choice(col: str, options: list[pl.Expr]) -> pl.Expr:
    """``options[i]`` where column ``col`` is ``i``."""
    expr = options[-1]
    for i, option in reversed(list(enumerate(options[:-1]))):
        expr = pl.when(pl.col(col) == i).then(option).otherwise(expr)
    return expr


def _entity_of(by: tuple[str, ...]) -> pl.Expr:
    cols = [pl.col(c).cast(pl.String) for c in by]
    return cols[0] if len(cols) == 1 else pl.concat_str(cols, separator="/")


def _plan(d: IndicatorDef, frame: pl.LazyFrame) -> pl.LazyFrame:
    if kind(d) in COLUMN_KINDS:
        return _selected(d, frame).group_by("entity_id", "window_start").agg(_aggs(kind(d)))
    return _population_plan(d)(frame)


def partials(catalog: Catalog, frames: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    """Partials of every indicator whose family is in ``frames`` and has rows.

    The column indicators' partials come as one frame, under the key
    :data:`COLUMNS`, with their ``indicator_id`` and window end (``_end``):
    the rows of all of them are stacked and aggregated by one ``group_by``
    per :func:`kind`. The population indicators' come one frame per
    indicator. Everything is planned first and computed in one
    ``collect_all``: with tens of indicators per family, per-call overhead
    is much of the cost.

    >>> from datetime import datetime, UTC
    >>> from indicators.definitions import load_catalog
    >>> cat = load_catalog()
    >>> f = pl.DataFrame({"ts": [datetime(2026, 5, 12, 6, 0, s, tzinfo=UTC) for s in (1, 2)],
    ...                   "metric": ["temperature"] * 2, "site_id": ["f1"] * 2,
    ...                   "grid_id": ["g1"] * 2, "value": [20.0, 24.0],
    ...                   "capacity": [None, None]})
    >>> p = partials(cat, {"reading": f})[COLUMNS]
    >>> p.filter(pl.col("indicator_id") == "fire.temperature").select("entity_id", "max").rows()
    [('f1', 24.0)]
    """
    return Aggregator(catalog).partials(frames)


class Aggregator:
    """:func:`partials` for one catalogue, with every indicator's plan built once.

    Building the expressions of tens of indicators costs about as much as
    running them on a batch; an aggregator builds them when it is made and
    only applies them to each batch.
    """

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        # Per family: recipes of stacked rows (by kind), and of population rows.
        self._stacked: dict[str, list[tuple[str, Recipe]]] = {}
        self._population: dict[str, list[tuple[list[str], Recipe]]] = {}
        joined: dict[tuple, list[IndicatorDef]] = {}
        shared: dict[tuple, list[str]] = {}
        first: dict[tuple, IndicatorDef] = {}
        # The stacked rows carry their indicator's id as one of these (cheaper than text).
        column_ids = pl.Enum([d.id for d in catalog.indicators if kind(d) in COLUMN_KINDS])
        for d in catalog.indicators:
            k = kind(d)
            if _joinable(d):
                same = (d.family, *d.where, d.field, d.window_offset_us, k)
                joined.setdefault(same, []).append(d)
            elif k in COLUMN_KINDS:
                self._stacked.setdefault(d.family, []).append((k, _stacked(d, column_ids)))
            else:  # lifecycle rows are the same for every indicator that picks them alike
                same = (
                    d.family,
                    *sorted(d.where.items()),
                    *d.entity.by,
                    d.window_us,
                    d.window_offset_us,
                    d.field,
                    k,
                )
                shared.setdefault(same, []).append(d.id)
                first.setdefault(same, d)
        for (family, *_, k), defs in joined.items():
            self._stacked.setdefault(family, []).append((k, _by_join(defs, column_ids)))
        for same, ids in shared.items():
            d = first[same]
            self._population.setdefault(d.family, []).append((ids, _population_plan(d)))
        self._aggs = {k: _aggs(k) for k in COLUMN_KINDS}
        self._keys = [*_TAGGED, pl.col("_end")]

    def partials(self, frames: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
        """See :func:`partials`."""
        plans: list[pl.LazyFrame] = []
        ids: list[list[str]] = []
        stacked: dict[str, list[pl.LazyFrame]] = {k: [] for k in COLUMN_KINDS}
        for family, frame in frames.items():
            if not frame.height:
                continue
            lazy = frame.lazy()
            for names, recipe in self._population.get(family, ()):
                ids.append(names)
                plans.append(recipe(lazy))
            for k, recipe in self._stacked.get(family, ()):
                stacked[k].append(recipe(lazy))
        kinds = [k for k, rows in stacked.items() if rows]
        plans += [
            pl.concat(stacked[k])
            .group_by(self._keys)
            .agg(self._aggs[k])
            .with_columns(pl.col("indicator_id").cast(pl.String))
            for k in kinds
        ]
        done = pl.collect_all(plans, engine=ENGINE, optimizations=_OPTIMIZATIONS)
        out = {
            i: part
            for names, part in zip(ids, done[: len(ids)], strict=True)
            if part.height
            for i in names
        }
        columns = [p for p in done[len(ids) :] if p.height]
        if columns:
            out[COLUMNS] = pl.concat(columns, how="diagonal_relaxed")
        return out


def shard_of(entity_id: pl.Expr, shards: int) -> pl.Expr:
    """The shard an entity's state lives in: stable for a given Polars version."""
    return (entity_id.hash(seed=0) % shards).cast(pl.Int64)


def split_by_shard(
    parts: dict[str, pl.DataFrame], shards: int, keys: dict[str, str] | None = None
) -> list[dict[str, pl.DataFrame]]:
    """Split every indicator's partials into ``shards`` groups by entity.

    ``keys`` names another column to shard a frame by (``entity_id`` otherwise).
    A frame with no rows is in no shard. With one shard, every frame is its own
    piece, as it is; otherwise a frame that several names share (as population
    indicators that pick their rows alike do) is split once.

    >>> p = {"x": pl.DataFrame({"entity_id": ["a", "b", "a"], "window_start": [0, 0, 60]})}
    >>> split = split_by_shard(p, 4)
    >>> sum(s["x"].height for s in split if "x" in s), len(split)
    (3, 4)
    >>> split_by_shard(p, 1)[0]["x"] is p["x"]
    True
    """
    out: list[dict[str, pl.DataFrame]] = [{} for _ in range(shards)]
    keys = keys or {}
    if shards == 1:
        out[0] = {name: frame for name, frame in parts.items() if frame.height}
        return out

    def job(name: str, frame: pl.DataFrame) -> tuple[int, str]:
        return id(frame), keys.get(name, "entity_id")

    frames = {job(n, f): f for n, f in parts.items()}  # frames are alive: ids are unique
    tagged = pl.collect_all(
        [
            frame.lazy().with_columns(shard_of(pl.col(key), shards).alias("_shard"))
            for (_, key), frame in frames.items()
        ],
        engine=ENGINE,
    )
    pieces = {
        k: frame.partition_by("_shard", as_dict=True, include_key=False)
        for k, frame in zip(frames, tagged, strict=True)
    }
    for name, frame in parts.items():
        for (shard,), piece in pieces[job(name, frame)].items():
            out[shard][name] = piece
    return out
