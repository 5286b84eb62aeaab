"""Batched decoding and validation of wire records.

A batch of raw lines (the bytes a file line or a Kafka message value holds)
becomes one validated Polars frame per input family plus a frame of dead
letters. The work is columnar: one ``read_ndjson`` call parses the batch and
every check is a vectorised expression. Only a line that breaks the parser is
looked at on its own, found by bisecting the batch, so a clean batch never
pays for it.

>>> from datetime import datetime, UTC
>>> d = Decoder(now=lambda: datetime(2026, 5, 12, 7, tzinfo=UTC))
>>> out = d.decode(RawBatch("doc", 0, 0, [
...     b'{"family":"heartbeat","ts":"2026-05-12T06:00:00Z","device_id":"c1",'
...     b'"device_type":"camera","grid_id":"G1","district_id":"D1"}',
...     b'{"family":"heartbeat"',
... ]))
>>> out.frames["heartbeat"]["device_id"].to_list(), out.dead["reason"].to_list()
(['c1'], ['malformed_json'])
>>> out.events_in, out.valid
(2, 1)
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import numpy as np
import orjson
import polars as pl
import pyarrow as pa

from schemas.families import DEAD_LETTERS, INPUT_FAMILIES, METRIC_DEVICE_TYPE, polars_schema

__all__ = ["Decoded", "Decoder", "RawBatch", "dead_letters", "partition_key"]


@dataclass(frozen=True, slots=True)
class RawBatch:
    """Raw records from one source partition, in order.

    ``first_offset`` is the offset (or 0-based line number) of ``lines[0]``;
    the others follow one by one, unless ``offsets`` gives each line's offset
    (Kafka offsets have gaps where transaction markers or compaction were).

    A batch with no lines and ``idle_until`` set is an idleness tick: the
    source partition has been caught up and quiet for a while, and vouches
    that no event older than ``idle_until`` will follow (see
    :meth:`indicators.watermark.PartitionClock.observe`). A batch with
    ``ended`` set is the partition's last word: nothing follows (a replay that
    stops at the end of the data). A partition that ends without ever having
    sent an event then no longer holds back the watermark of the others.

    >>> RawBatch("city.readings", 3, 7, [b"a", b"b"], offsets=[7, 9]).key
    'city.readings#3'
    """

    source: str
    partition: int | None
    first_offset: int
    lines: Sequence[bytes]
    offsets: Sequence[int] | None = None
    idle_until: datetime | None = None
    ended: bool = False

    @property
    def key(self) -> str:
        """The source partition's name: ``source`` alone, or ``source#partition``."""
        return partition_key(self.source, self.partition)


@dataclass(slots=True)
class Decoded:
    """What a batch became: valid frames per family, dead letters, accounting."""

    source: str
    partition: int | None
    first_offset: int
    events_in: int
    frames: dict[str, pl.DataFrame]
    dead: pl.DataFrame
    max_event_ts: datetime | None = None
    lines: Sequence[bytes] = ()
    offsets: Sequence[int] | None = None

    def rows_of(self, offsets: pl.Series) -> pl.Series:
        """Line indexes of ``offsets`` (which must be offsets of this batch)."""
        if self.offsets is None:
            return (offsets - self.first_offset).alias("_row")
        return pl.Series("_row", self.offsets, dtype=pl.Int64).search_sorted(offsets)

    @property
    def valid(self) -> int:
        return sum(f.height for f in self.frames.values())


# Every field of every family as the parser reads it: timestamps stay text until checked.
_WIRE: dict[str, pl.DataType] = {}
for _schema in INPUT_FAMILIES.values():
    for _name, _dtype in polars_schema(_schema).items():
        _WIRE.setdefault(_name, pl.String if isinstance(_dtype, pl.Datetime) else _dtype)

#: The Python type each wire field's JSON values must have for the parser (a guess: see
#: :func:`_maybe_refused`).
_WIRE_KINDS = {
    name: float if dtype == pl.Float64 else bool if dtype == pl.Boolean else str
    for name, dtype in _WIRE.items()
}
#: Failing batches of at most this many lines are screened (:meth:`Decoder._screen`).
_SCREEN = 1024

_TS_MS_FORMAT = "%Y-%m-%dT%H:%M:%S.%3fZ"  # the usual form: Polars parses it much faster
_TS_FORMAT = "%Y-%m-%dT%H:%M:%S%.fZ"
_TS_OFFSET_FORMAT = "%Y-%m-%dT%H:%M:%S%.f%z"
_DEAD_POLARS = polars_schema(DEAD_LETTERS)
#: The engine of the decoder's queries: the in-memory one starts a small query about twice
#: as fast as the streaming one (Polars' default); see ``indicators.aggregate.ENGINE``.
_ENGINE = "in-memory"
#: A batch's dead letters before they get their offsets and raw lines.
_DEAD_ROWS = {"_row": pl.Int64, "reason": pl.String, "detail": pl.String}


def _enum(f: pa.Field) -> list[str] | None:
    meta = f.metadata or {}
    raw = meta.get(b"enum")
    return raw.decode().split(",") if raw else None


#: The numeric fields: each must be finite in every row, whatever the row's family.
_NUMBERS = ("value", "capacity", "lift_ms", "battery_pct")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)

#: Event times are parsed in up to three passes, each only if the ones before left a
#: time unread: milliseconds and a ``Z`` (the usual form, read by Polars' fast parser),
#: any fraction and a ``Z``, then the other RFC 3339 forms. A time the first pass reads,
#: the second reads alike. No cache: event times are nearly all unique.
_MS_TS = pl.col("ts").str.to_datetime(
    _TS_MS_FORMAT, strict=False, time_zone="UTC", time_unit="us", cache=False
)
_FAST_TS = pl.col("ts").str.to_datetime(
    _TS_FORMAT, strict=False, time_zone="UTC", time_unit="us", cache=False
)
#: Other RFC 3339 forms: an explicit offset, or a space for the 'T'.
_SLOW_TS = (
    pl.col("ts")
    .str.replace(r"[Zz]$", "+00:00")
    .str.replace(r"^(\d{4}-\d{2}-\d{2})[ tT]", "${1}T")
    .str.to_datetime(_TS_OFFSET_FORMAT, strict=False, time_zone="UTC", time_unit="us")
)


@dataclass(frozen=True, slots=True)
class _Case:
    """One way a parsed row is invalid: where ``cond`` holds, the row is ``why``
    (the first case that holds wins), explained by ``text``. ``family`` is the one
    family whose rows the case can hit (None: any family's)."""

    family: str | None
    cond: pl.Expr
    why: str
    text: pl.Expr | str


@dataclass(frozen=True, slots=True)
class _Rules:
    """One family's checks on its rows as a whole (:meth:`Decoder._clean`), and the
    per-row verdict (reason, detail) for when one fails: its own cases and those of
    every family, in their order (the other families' cases never hit its rows)."""

    required: tuple[str, ...]  # fields that must not be null
    enums: tuple[tuple[str, pl.Enum], ...]  # fields whose value comes from a list
    metric: bool  # the metric must be one its device_type measures
    reason: pl.Expr
    detail: pl.Expr


#: By a metric's position among the metrics, its device type's among the device types
#: (positions in their enums: for :meth:`Decoder._clean`).
_METRIC_ENUM = next(_enum(f) for f in INPUT_FAMILIES["reading"] if f.name == "metric")
_DEVICE_ENUM = next(_enum(f) for f in INPUT_FAMILIES["reading"] if f.name == "device_type")
_DEVICE_OF_METRIC = np.array(
    [_DEVICE_ENUM.index(METRIC_DEVICE_TYPE[m]) for m in _METRIC_ENUM], dtype=np.int64
)


class Decoder:
    """Turns :class:`RawBatch` into :class:`Decoded`.

    Timestamps more than ``max_future`` ahead of ``now()`` or more than
    ``max_age`` behind it are dead letters (``timestamp_out_of_range``): a
    clock set to 1970 or 2099 is a broken device, not news.

    The rows of each family are first checked as a whole, from cheap column
    statistics (null counts, the range of event times, a cast to an enum):
    a family whose rows pass them all holds no invalid row. Only a family
    that fails one gets a verdict row by row, by the expressions that name
    each dead letter's reason; so a clean batch never pays for those.
    """

    def __init__(
        self,
        max_future: timedelta = timedelta(days=1),
        max_age: timedelta = timedelta(days=3650),
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.max_future = max_future
        self.max_age = max_age
        self.now = now
        # Built once; "now" comes in as a column.
        self._future_us = max_future // _US
        self._age_us = max_age // _US
        cases = self._cases()
        self._reason, self._detail = _verdict(cases)
        self._rules = {
            name: _rules(name, schema, [c for c in cases if c.family in (None, name)])
            for name, schema in INPUT_FAMILIES.items()
        }

    # -- parsing ---------------------------------------------------------------
    def _parse(
        self,
        lines: Sequence[bytes],
        base: int,
        bad: list[tuple[int, str, str]],
        buf: bytes | None = None,
        screened: bool = False,
    ) -> list[tuple[int, pl.DataFrame]]:
        """Parse ``lines`` (joined by newlines: ``buf``) into frames, bisecting around
        lines the parser rejects: each frame with the index of its first line.

        ``screened``: these lines were screened already (see :meth:`_screen`); a part is
        screened once, not again at every halving below it."""
        if not lines:
            return []
        buf = b"\n".join(lines) if buf is None else buf
        if _count(buf, b"\n") != len(lines) - 1:
            # Raw newlines can only be whitespace in valid JSON (strings can't hold them).
            lines = [_one_line(line) for line in lines]
            buf = b"\n".join(lines)
        err = "blank line"
        try:
            df = pl.read_ndjson(io.BytesIO(buf), schema=_WIRE)
        except (pl.exceptions.PolarsError, ValueError) as exc:
            df, err = None, str(exc)
        if df is not None and df.height == len(lines):
            return [(base, df)]
        if len(lines) == 1:
            bad.append((base, *_classify(lines[0], err)))
            return []
        if not screened and len(lines) <= _SCREEN:
            if (parts := self._screen(lines, base, bad)) is not None:
                return parts
            screened = True
        mid = len(lines) // 2
        return self._parse(lines[:mid], base, bad, screened=screened) + self._parse(
            lines[mid:], base + mid, bad, screened=screened
        )

    def _screen(
        self, lines: Sequence[bytes], base: int, bad: list[tuple[int, str, str]]
    ) -> list[tuple[int, pl.DataFrame]] | None:
        """:meth:`_parse` of a few ``lines`` the parser rejects, by setting aside those
        :func:`_maybe_refused` points at: each is parsed alone, the others together
        (bisected if the guess missed one). None if it points at none.

        The parser still decides every line (a guess only saves time): bisecting a
        few lines costs a parser call per halving, a guess a few microseconds a line.
        """
        aside = [i for i, line in enumerate(lines) if _maybe_refused(line)]
        if not aside:
            return None
        flagged = set(aside)
        rest = [i for i in range(len(lines)) if i not in flagged]
        rest_bad: list[tuple[int, str, str]] = []
        parts = []
        for first, df in self._parse([lines[i] for i in rest], 0, rest_bad, screened=True):
            parts += _runs(df, [base + i for i in rest[first : first + df.height]])
        bad += [(base + rest[i], why, text) for i, why, text in rest_bad]
        for i in aside:
            parts += self._parse([lines[i]], base + i, bad)
        return sorted(parts, key=lambda part: part[0])

    # -- validation ------------------------------------------------------------
    def _cases(self) -> list[_Case]:
        """Every way a row can be invalid, in the order they are tried."""
        now = pl.col("_now")
        fam = pl.col("family")
        cases = [
            _Case(None, fam.is_null(), "missing_field", "field 'family' is missing"),
            _Case(
                None,
                ~fam.is_in(list(INPUT_FAMILIES)),
                "unknown_family",
                pl.format("family '{}'", fam),
            ),
        ]
        for name, schema in INPUT_FAMILIES.items():
            mine = fam == name
            for f in schema:
                if f.name == "family":
                    continue
                if not f.nullable:
                    cases.append(
                        _Case(
                            name,
                            mine & pl.col(f.name).is_null(),
                            "missing_field",
                            f"field '{f.name}' is missing",
                        )
                    )
                allowed = _enum(f)
                if allowed:
                    reason = "unknown_device_type" if f.name == "device_type" else "unknown_value"
                    cases.append(
                        _Case(
                            name,
                            mine & pl.col(f.name).is_not_null() & ~pl.col(f.name).is_in(allowed),
                            reason,
                            pl.format(
                                f"field '{f.name}' is '{{}}', expected one of {allowed}",
                                pl.col(f.name),
                            ),
                        )
                    )
        expected_type = pl.col("metric").replace_strict(METRIC_DEVICE_TYPE, default=None)
        cases.append(
            _Case(
                "reading",
                (fam == "reading") & (expected_type != pl.col("device_type")),
                "metric_device_mismatch",
                pl.format(
                    "metric '{}' is not measured by device_type '{}'",
                    pl.col("metric"),
                    pl.col("device_type"),
                ),
            )
        )
        for num in _NUMBERS:
            cases.append(
                _Case(
                    None,
                    pl.col(num).is_not_null() & ~pl.col(num).is_finite(),
                    "non_finite_value",
                    f"field '{num}' must be finite",
                )
            )
        ts = pl.col("_ts")
        cases += [
            _Case(
                None,
                pl.col("ts").is_not_null() & ts.is_null(),
                "bad_timestamp",
                pl.format("field 'ts' is '{}', expected RFC 3339 with an offset", pl.col("ts")),
            ),
            _Case(
                None,
                (ts > now + self.max_future) | (ts < now - self.max_age),
                "timestamp_out_of_range",
                pl.format("field 'ts' is {}, too far from now", pl.col("ts")),
            ),
        ]
        return cases

    def _clean(self, rules: _Rules, frame: pl.DataFrame, now_us: int) -> bool:
        """Whether no row of one family's ``frame`` can be invalid, from column statistics.

        Each case of the family's verdict has its check here, or in :func:`_finite`: a
        case that holds for a row makes its check fail (a check may also fail where no
        case holds). The frame's ``ts`` is the parsed time: it is null where the wire's
        is missing or unreadable.
        """
        for name in rules.required:
            if frame[name].null_count():
                return False
        t = frame["ts"].to_physical()
        if t.max() > now_us + self._future_us or t.min() < now_us - self._age_us:
            return False
        codes: dict[str, pl.Series] = {}
        for name, enum in rules.enums:
            values = frame[name]
            codes[name] = values.cast(enum, strict=False)  # null where not one of the list
            if codes[name].null_count() != values.null_count():
                return False
        if rules.metric:  # both required, so neither has nulls here
            metric = codes["metric"].to_physical().to_numpy()
            device = codes["device_type"].to_physical().to_numpy()
            return not (_DEVICE_OF_METRIC[metric] != device).any()
        return True

    def _judge(
        self, rows: pl.DataFrame, reason: pl.Expr, detail: pl.Expr, now_us: int
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Split ``rows`` by their per-row verdict: the valid ones, and the others'
        dead-letter rows (``_row``, ``reason``, ``detail``)."""
        now = pl.lit(now_us, dtype=pl.Int64).cast(pl.Datetime("us", "UTC"))
        judged = rows.with_columns(_now=now).with_columns(_reason=reason)
        rejected = judged.filter(pl.col("_reason").is_not_null())
        rejected = rejected.select("_row", reason="_reason", detail=detail)
        valid = judged.filter(pl.col("_reason").is_null()).drop("_now", "_reason")
        return valid, rejected

    def _split(
        self, df: pl.DataFrame, offset: pl.Expr, now_us: int
    ) -> tuple[list[tuple[str, pl.DataFrame]], list[pl.DataFrame]]:
        """The parsed rows' valid ones, as each family's frame (with ``_row``), and
        the others' dead-letter rows."""
        picks = [
            df.lazy().filter(pl.col("family") == name).select([*_COLUMNS[name], offset, "_row"])
            for name in INPUT_FAMILIES
        ]
        picked = pl.collect_all(picks, engine=_ENGINE)
        rejected = []
        if sum(frame.height for frame in picked) < df.height:  # no family, or an unknown one
            known = pl.col("family").is_in(list(INPUT_FAMILIES)).fill_null(False)
            _, dead = self._judge(df.filter(~known), self._reason, self._detail, now_us)
            rejected.append(dead)
        finite = _finite(df)
        kept = []
        for (name, rules), frame in zip(self._rules.items(), picked, strict=True):
            if not frame.height:
                continue
            if not (finite and self._clean(rules, frame, now_us)):
                rows = df.filter(pl.col("family") == name)
                rows, dead = self._judge(rows, rules.reason, rules.detail, now_us)
                rejected.append(dead)
                frame = rows.select([*_COLUMNS[name], offset, "_row"])
            if frame.height:
                kept.append((name, frame))
        return kept, rejected

    def decode(self, batch: RawBatch) -> Decoded:
        """Decode and validate one batch; every line ends valid or dead."""
        return self.decode_all([batch])[0]

    def decode_all(self, batches: Sequence[RawBatch]) -> list[Decoded]:
        """:meth:`decode` of each of ``batches``, done as one: their lines are parsed and
        checked together, then cut back into batches. Batches of several source
        partitions (Kafka's: a few thousand lines each) cost about what one batch of all
        their lines does, not a parser call and a round of checks each.

        >>> d = Decoder(now=lambda: datetime(2026, 5, 12, 7, tzinfo=UTC))
        >>> line = (b'{"family":"heartbeat","ts":"2026-05-12T06:00:00Z","device_id":"c1",'
        ...         b'"device_type":"camera","grid_id":"G1","district_id":"D1"}')
        >>> a, b = d.decode_all([RawBatch("t", 0, 5, [line, b"{"]), RawBatch("t", 1, 9, [line])])
        >>> (a.valid, a.dead["offset"].to_list()), (b.valid, b.dead.height)
        ((1, [6]), (1, 0))
        """
        if len(batches) == 1:
            lines = batches[0].lines
        else:
            lines = [line for batch in batches for line in batch.lines]
        starts = np.cumsum([0, *(len(batch.lines) for batch in batches)])
        now = self.now()
        bad: list[tuple[int, str, str]] = []
        buf = b"\n".join(lines)
        parts = self._parse(lines, 0, bad, buf)
        dead_rows = [pl.DataFrame(bad, schema=_DEAD_ROWS, orient="row")] if bad else []
        kept: list[tuple[str, pl.DataFrame]] = []
        if parts:
            df = _unread_times(_numbered(parts))
            kept, rejected = self._split(df, _offsets_of(batches), _epoch_us(now))
            dead_rows += rejected
            found = _confirm_nested(df, kept, lines, buf)
            if found:
                dead_rows.append(
                    pl.DataFrame(
                        [(i, "mistyped_field", text) for i, text in found.items()],
                        schema=_DEAD_ROWS,
                        orient="row",
                    )
                )
                gone = pl.col("_row").is_in(pl.Series(list(found), dtype=pl.Int64).implode())
                kept = [(family, frame.filter(~gone)) for family, frame in kept]
                kept = [(family, frame) for family, frame in kept if frame.height]
        dead_rows = [d for d in dead_rows if d.height]
        rows = pl.concat(dead_rows).sort("_row") if dead_rows else pl.DataFrame(schema=_DEAD_ROWS)
        frame_cuts = [(family, frame, _cuts(frame, starts)) for family, frame in kept]
        dead_cuts = _cuts(rows, starts)
        out = []
        for i, batch in enumerate(batches):
            mine = [
                (family, frame.slice(cut[i], cut[i + 1] - cut[i]))
                for family, frame, cut in frame_cuts
                if cut[i + 1] > cut[i]
            ]
            mine.sort(key=lambda item: item[1]["_row"][0])  # in order of their first valid row
            frames = {family: frame.drop("_row") for family, frame in mine}
            max_ts = max((frame["ts"].max() for frame in frames.values()), default=None)
            dead = rows.slice(dead_cuts[i], dead_cuts[i + 1] - dead_cuts[i])
            dead = dead.with_columns(pl.col("_row") - int(starts[i]))
            out.append(
                Decoded(
                    source=batch.source,
                    partition=batch.partition,
                    first_offset=batch.first_offset,
                    events_in=len(batch.lines),
                    frames=frames,
                    dead=dead_letters(batch, dead, now),
                    max_event_ts=max_ts,
                    lines=batch.lines,
                    offsets=batch.offsets,
                )
            )
        return out


def _cuts(frame: pl.DataFrame, starts: np.ndarray) -> np.ndarray:
    """Where each batch's rows begin in ``frame`` (ascending ``_row``), and where they end."""
    return np.searchsorted(frame["_row"].to_numpy(), starts)


def _offsets_of(batches: Sequence[RawBatch]) -> pl.Expr:
    """The ``_offset`` of each row of ``batches``' lines, joined (from its ``_row``)."""
    if len(batches) == 1 and batches[0].offsets is None:  # one run of offsets: no array
        return (pl.col("_row") + batches[0].first_offset).alias("_offset")
    offsets = np.concatenate(
        [
            np.arange(b.first_offset, b.first_offset + len(b.lines), dtype=np.int64)
            if b.offsets is None
            else np.asarray(b.offsets, dtype=np.int64)
            for b in batches
        ]
    )
    return pl.lit(pl.Series(offsets, dtype=pl.Int64)).gather(pl.col("_row")).alias("_offset")


def _runs(df: pl.DataFrame, rows: list[int]) -> list[tuple[int, pl.DataFrame]]:
    """``df`` (its rows' line indexes: ``rows``, ascending) cut where they skip lines:
    each piece with the index of its first line."""
    cuts = [k for k in range(1, len(rows)) if rows[k] != rows[k - 1] + 1]
    bounds = [0, *cuts, len(rows)]
    return [(rows[a], df.slice(a, b - a)) for a, b in pairwise(bounds)]


def _maybe_refused(line: bytes) -> bool:
    """Whether the batch parser may refuse ``line`` alone: it is no JSON object, or a
    field of the wire schema holds a value of a type the parser cannot read as the
    field's (strings take any value). A guess, to look at such lines first."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return True
    if not isinstance(obj, dict):
        return True
    for name, value in obj.items():
        kind = _WIRE_KINDS.get(name)
        if kind is None or value is None or kind is str:
            continue
        if isinstance(value, bool) != (kind is bool) or not isinstance(value, int | float):
            return True
    return False


def _numbered(parts: list[tuple[int, pl.DataFrame]]) -> pl.DataFrame:
    """The parsed frames as one, each row with its line's index (``_row``) and its event
    time's first parse (``_ts``): one query, however many frames bisection left."""
    if len(parts) == 1:
        base, df = parts[0]
        rows = pl.int_range(base, base + df.height)
    else:
        df = pl.concat([frame for _, frame in parts])
        rows = pl.lit(
            pl.Series(
                np.concatenate([np.arange(b, b + f.height) for b, f in parts]), dtype=pl.Int64
            )
        )
    return df.with_columns(rows.alias("_row"), _ts=_MS_TS)


def _unread_times(df: pl.DataFrame) -> pl.DataFrame:
    """``df`` with the event times the first parse left unread (``_ts`` null where
    ``ts`` is not) parsed by the later ones: only those rows, as few as they are."""
    ts, times = df["ts"], df["_ts"]
    if times.null_count() == ts.null_count():
        return df
    rows = (times.is_null() & ts.is_not_null()).arg_true()
    unread = ts.gather(rows).to_frame()
    read = unread.select(_FAST_TS).to_series()
    if read.null_count():
        read = unread.select(pl.coalesce(pl.lit(read), _SLOW_TS)).to_series()
    return df.with_columns(times.clone().scatter(rows, read))


def _verdict(cases: list[_Case]) -> tuple[pl.Expr, pl.Expr]:
    """The (reason, detail) pair of expressions of ``cases``: the first that holds
    names the reason; a null reason means valid."""
    reason: pl.Expr = pl.lit(None, dtype=pl.String)
    detail: pl.Expr = pl.lit(None, dtype=pl.String)
    for case in reversed(cases):
        text = pl.lit(case.text) if isinstance(case.text, str) else case.text
        reason = pl.when(case.cond).then(pl.lit(case.why)).otherwise(reason)
        detail = pl.when(case.cond).then(text).otherwise(detail)
    return reason, detail


def _rules(family: str, schema: pa.Schema, cases: list[_Case]) -> _Rules:
    """One family's :class:`_Rules`; ``cases``: those that can hit its rows."""
    fields = [f for f in schema if f.name != "family"]
    enums = tuple((f.name, pl.Enum(allowed)) for f in fields if (allowed := _enum(f)))
    reason, detail = _verdict(cases)
    return _Rules(
        required=tuple(f.name for f in fields if not f.nullable),
        enums=enums,
        metric=any(c.why == "metric_device_mismatch" for c in cases),
        reason=reason,
        detail=detail,
    )


#: Each family's frame's columns, in its schema's order (``ts`` the parsed time).
_COLUMNS = {
    name: [pl.col("_ts").alias("ts") if f.name == "ts" else pl.col(f.name) for f in schema]
    for name, schema in INPUT_FAMILIES.items()
}


def _epoch_us(t: datetime) -> int:
    """Microseconds since the epoch of ``t`` (naive: UTC)."""
    return ((t if t.tzinfo is not None else t.replace(tzinfo=UTC)) - _EPOCH) // _US


def _finite(df: pl.DataFrame) -> bool:
    """Whether every number of the parsed rows is finite (or null), whatever the row's
    family (a ``non_finite_value`` check of :meth:`Decoder._clean`)."""
    for name in _NUMBERS:
        values = df[name]
        if values.null_count() < len(values) and not values.is_finite().all():
            return False
    return True


def _count(buf: bytes, byte: bytes) -> int:
    """How many times ``byte`` occurs in ``buf`` (a vectorised scan).

    In slices of :data:`_SCAN` bytes: a mask of a whole batch (megabytes) would be fresh
    memory at every call, and its page faults cost as much as the comparisons.

    >>> _count(b"a,b,c" * 100_000, b",")
    200000
    """
    data = np.frombuffer(buf, dtype=np.uint8)
    code = ord(byte)
    return sum(
        int(np.count_nonzero(data[i : i + _SCAN] == code)) for i in range(0, len(data), _SCAN)
    )


#: Bytes scanned at a time by :func:`_count` (a mask of this size is reused by the allocator).
_SCAN = 1 << 18


def partition_key(source: str, partition: int | None) -> str:
    """How a source partition is named in keyed state (``city.readings#3``).

    >>> partition_key("city.readings", 3), partition_key("sim.jsonl", None)
    ('city.readings#3', 'sim.jsonl')
    """
    return source if partition is None else f"{source}#{partition}"


def dead_letters(batch: RawBatch | Decoded, rows: pl.DataFrame, now: datetime) -> pl.DataFrame:
    """Dead letters for ``rows`` (``_row`` index into the batch, ``reason``, ``detail``)."""
    if not rows.height:
        return pl.DataFrame(schema=_DEAD_POLARS)
    idx = rows["_row"].to_list()
    return pl.DataFrame(
        {
            "received_at": [now] * len(idx),
            "source": [batch.source] * len(idx),
            "partition": [batch.partition] * len(idx),
            "offset": _offsets_at(batch, idx),
            "reason": rows["reason"],
            "detail": rows["detail"],
            "raw": [bytes(batch.lines[i]) for i in idx],
        },
        schema=_DEAD_POLARS,
    )


def _offsets_at(batch: RawBatch | Decoded, idx: list[int]) -> list[int]:
    if batch.offsets is None:
        return [batch.first_offset + i for i in idx]
    return [batch.offsets[i] for i in idx]


_STRING_FIELDS = sorted(
    {f.name for schema in INPUT_FAMILIES.values() for f in schema if f.type == pa.string()}
)
_SUSPECT = pl.any_horizontal(
    pl.col(c).str.starts_with("[") | pl.col(c).str.starts_with("{") for c in _STRING_FIELDS
).fill_null(False)


def _confirm_nested(
    df: pl.DataFrame, kept: list[tuple[str, pl.DataFrame]], lines: Sequence[bytes], blob: bytes
) -> dict[int, str]:
    """Valid rows where the parser turned a JSON object or array into a string:
    the problem of each, by ``_row``.

    Only valid rows (those of ``kept``, each family's) with a string field (of any
    family: ``df`` holds them all) starting with ``[`` or ``{`` (rare) are looked at,
    by re-reading their original line. Every valid row's line opens with a ``{``, so
    a batch with no ``[`` and no more ``{`` than valid rows cannot have one, and is not
    looked at (``blob``: the lines, joined).
    """
    if b"[" not in blob and _count(blob, b"{") <= sum(frame.height for _, frame in kept):
        return {}
    valid = (
        pl.concat([frame["_row"] for _, frame in kept]) if kept else pl.Series([], dtype=pl.Int64)
    )
    rows = df.filter(_SUSPECT & pl.col("_row").is_in(valid.implode()))["_row"].to_list()
    found = {}
    for i in rows:
        problem = _mistyped(orjson.loads(_one_line(lines[i])))
        if problem:
            found[i] = problem
    return found


def _one_line(line: bytes) -> bytes:
    if b"\n" in line or b"\r" in line:
        return line.replace(b"\r", b" ").replace(b"\n", b" ")
    return line


def _classify(line: bytes, parser_error: str) -> tuple[str, str]:
    """Why the batch parser rejected this one line: (reason, detail)."""
    if not line.strip():
        return "malformed_json", "empty line"
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        msg = str(exc)
        if "infinity" in msg or b"NaN" in line or b"Infinity" in line:
            return "non_finite_value", f"numbers must be finite: {msg}"
        return "malformed_json", msg
    if not isinstance(obj, dict):
        return "not_an_object", f"expected a JSON object, got {type(obj).__name__}"
    problem = _mistyped(obj)
    if problem:
        return "mistyped_field", problem
    return "mistyped_field", parser_error[:200]


def _mistyped(obj: dict) -> str | None:
    """The first field of ``obj`` whose JSON type its family's schema does not allow."""
    family = obj.get("family")
    schema = INPUT_FAMILIES.get(family) if isinstance(family, str) else None
    if schema is None:
        return None
    for f in schema:
        value = obj.get(f.name)
        if value is not None and not _json_type_ok(f.type, value):
            got = type(value).__name__
            return f"field '{f.name}' is {got} {value!r:.40}, expected {_json_type_name(f.type)}"
    return None


def _json_type_ok(t: pa.DataType, value: object) -> bool:
    if pa.types.is_floating(t):
        return (
            isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        )
    if pa.types.is_boolean(t):
        return isinstance(value, bool)
    return isinstance(value, str)


def _json_type_name(t: pa.DataType) -> str:
    if pa.types.is_floating(t):
        return "a finite number"
    if pa.types.is_boolean(t):
        return "true or false"
    if pa.types.is_timestamp(t):
        return "an RFC 3339 string"
    return "a string"
