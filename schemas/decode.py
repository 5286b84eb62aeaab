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

_TS_FORMAT = "%Y-%m-%dT%H:%M:%S%.fZ"
_TS_OFFSET_FORMAT = "%Y-%m-%dT%H:%M:%S%.f%z"
_DEAD_POLARS = polars_schema(DEAD_LETTERS)


def _enum(f: pa.Field) -> list[str] | None:
    meta = f.metadata or {}
    raw = meta.get(b"enum")
    return raw.decode().split(",") if raw else None


class Decoder:
    """Turns :class:`RawBatch` into :class:`Decoded`.

    Timestamps more than ``max_future`` ahead of ``now()`` or more than
    ``max_age`` behind it are dead letters (``timestamp_out_of_range``): a
    clock set to 1970 or 2099 is a broken device, not news.
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
        self._reason, self._detail = self._checks()  # built once; "now" comes in as a column

    # -- parsing ---------------------------------------------------------------
    def _parse(
        self,
        lines: Sequence[bytes],
        base: int,
        bad: list[tuple[int, str, str]],
        buf: bytes | None = None,
    ):
        """Parse ``lines`` (joined by newlines: ``buf``) into frames, bisecting around
        lines the parser rejects."""
        if not lines:
            return []
        buf = b"\n".join(lines) if buf is None else buf
        if buf.count(b"\n") != len(lines) - 1:
            # Raw newlines can only be whitespace in valid JSON (strings can't hold them).
            lines = [_one_line(line) for line in lines]
            buf = b"\n".join(lines)
        err = "blank line"
        try:
            df = pl.read_ndjson(io.BytesIO(buf), schema=_WIRE)
        except (pl.exceptions.PolarsError, ValueError) as exc:
            df, err = None, str(exc)
        if df is not None and df.height == len(lines):
            return [df.with_columns(pl.int_range(base, base + len(lines)).alias("_row"))]
        if len(lines) == 1:
            bad.append((base, *_classify(lines[0], err)))
            return []
        mid = len(lines) // 2
        return self._parse(lines[:mid], base, bad) + self._parse(lines[mid:], base + mid, bad)

    # -- validation ------------------------------------------------------------
    def _checks(self) -> tuple[pl.Expr, pl.Expr]:
        """One (reason, detail) pair of expressions; null reason means valid."""
        now = pl.col("_now")
        fam = pl.col("family")
        cases: list[tuple[pl.Expr, str, pl.Expr | str]] = [
            (fam.is_null(), "missing_field", "field 'family' is missing"),
            (~fam.is_in(list(INPUT_FAMILIES)), "unknown_family", pl.format("family '{}'", fam)),
        ]
        for name, schema in INPUT_FAMILIES.items():
            mine = fam == name
            for f in schema:
                if f.name == "family":
                    continue
                if not f.nullable:
                    cases.append(
                        (
                            mine & pl.col(f.name).is_null(),
                            "missing_field",
                            f"field '{f.name}' is missing",
                        )
                    )
                allowed = _enum(f)
                if allowed and f.name != "family":
                    reason = "unknown_device_type" if f.name == "device_type" else "unknown_value"
                    cases.append(
                        (
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
            (
                (fam == "reading") & (expected_type != pl.col("device_type")),
                "metric_device_mismatch",
                pl.format(
                    "metric '{}' is not measured by device_type '{}'",
                    pl.col("metric"),
                    pl.col("device_type"),
                ),
            )
        )
        for num in ("value", "capacity", "lift_ms", "battery_pct"):
            cases.append(
                (
                    pl.col(num).is_not_null() & ~pl.col(num).is_finite(),
                    "non_finite_value",
                    f"field '{num}' must be finite",
                )
            )
        ts = pl.col("_ts")
        cases += [
            (
                pl.col("ts").is_not_null() & ts.is_null(),
                "bad_timestamp",
                pl.format("field 'ts' is '{}', expected RFC 3339 with an offset", pl.col("ts")),
            ),
            (
                (ts > now + self.max_future) | (ts < now - self.max_age),
                "timestamp_out_of_range",
                pl.format("field 'ts' is {}, too far from now", pl.col("ts")),
            ),
        ]
        reason: pl.Expr = pl.lit(None, dtype=pl.String)
        detail: pl.Expr = pl.lit(None, dtype=pl.String)
        for cond, why, text in reversed(cases):
            text_expr = pl.lit(text) if isinstance(text, str) else text
            reason = pl.when(cond).then(pl.lit(why)).otherwise(reason)
            detail = pl.when(cond).then(text_expr).otherwise(detail)
        return reason, detail

    def decode(self, batch: RawBatch) -> Decoded:
        """Decode and validate one batch; every line ends valid or dead."""
        bad: list[tuple[int, str, str]] = []
        buf = b"\n".join(batch.lines)
        parts = self._parse(batch.lines, 0, bad, buf)
        frames: dict[str, pl.DataFrame] = {}
        dead_rows = pl.DataFrame(
            bad, schema={"_row": pl.Int64, "reason": pl.String, "detail": pl.String}, orient="row"
        )
        max_ts = None
        if parts:
            df = pl.concat(parts) if len(parts) > 1 else parts[0]
            fast = pl.col("ts").str.to_datetime(  # no cache: event times are nearly all unique
                _TS_FORMAT, strict=False, time_zone="UTC", time_unit="us", cache=False
            )
            df = df.with_columns(_ts=fast)
            if df["_ts"].null_count() > df["ts"].null_count():
                # Other RFC 3339 forms: an explicit offset, or a space for the 'T'.
                slow = (
                    pl.col("ts")
                    .str.replace(r"[Zz]$", "+00:00")
                    .str.replace(r"^(\d{4}-\d{2}-\d{2})[ tT]", "${1}T")
                    .str.to_datetime(
                        _TS_OFFSET_FORMAT, strict=False, time_zone="UTC", time_unit="us"
                    )
                )
                df = df.with_columns(_ts=pl.coalesce(pl.col("_ts"), slow))
            df = df.with_columns(_now=pl.lit(self.now(), dtype=pl.Datetime("us", "UTC")))
            # The detail (text, per case) only for the rare rows with a reason.
            df = df.with_columns(_reason=self._reason, _detail=pl.lit(None, dtype=pl.String))
            df = _confirm_nested(df, batch.lines, buf)
            rejected = df.filter(pl.col("_reason").is_not_null())
            if rejected.height:
                detail = pl.coalesce("_detail", self._detail)  # a mistyped field's, or the case's
                dead_rows = pl.concat(
                    [dead_rows, rejected.select("_row", reason="_reason", detail=detail)]
                )
            ok = df.filter(pl.col("_reason").is_null())
            if ok.height:
                max_ts = ok["_ts"].max()
            for name, part in ok.partition_by("family", as_dict=True).items():
                family = name[0] if isinstance(name, tuple) else name
                schema = INPUT_FAMILIES[family]
                cols = [
                    pl.col("_ts").alias("ts") if f.name == "ts" else pl.col(f.name) for f in schema
                ]
                frames[family] = part.select([*cols, _offset_expr(batch)])
        dead = dead_letters(batch, dead_rows.sort("_row"), self.now())
        return Decoded(
            source=batch.source,
            partition=batch.partition,
            first_offset=batch.first_offset,
            events_in=len(batch.lines),
            frames=frames,
            dead=dead,
            max_event_ts=max_ts,
            lines=batch.lines,
            offsets=batch.offsets,
        )


def partition_key(source: str, partition: int | None) -> str:
    """How a source partition is named in keyed state (``city.readings#3``).

    >>> partition_key("city.readings", 3), partition_key("sim.jsonl", None)
    ('city.readings#3', 'sim.jsonl')
    """
    return source if partition is None else f"{source}#{partition}"


def _offset_expr(batch: RawBatch) -> pl.Expr:
    if batch.offsets is None:
        return (pl.col("_row") + batch.first_offset).alias("_offset")
    return pl.lit(pl.Series(batch.offsets, dtype=pl.Int64)).gather(pl.col("_row")).alias("_offset")


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


def _confirm_nested(df: pl.DataFrame, lines: Sequence[bytes], blob: bytes) -> pl.DataFrame:
    """Reject rows where the parser turned a JSON object or array into a string.

    Only rows with a string field starting with ``[`` or ``{`` (rare) are
    looked at, by re-reading their original line. Every valid row's line
    opens with a ``{``, so a batch with no ``[`` and no more ``{`` than valid
    rows cannot have one, and is not looked at (``blob``: the lines, joined).
    """
    if b"[" not in blob and blob.count(b"{") <= df["_reason"].null_count():  # the valid rows
        return df
    suspect = pl.any_horizontal(
        pl.col(c).str.starts_with("[") | pl.col(c).str.starts_with("{") for c in _STRING_FIELDS
    )
    rows = df.filter(suspect.fill_null(False) & pl.col("_reason").is_null())["_row"].to_list()
    found = {}
    for i in rows:
        problem = _mistyped(orjson.loads(_one_line(lines[i])))
        if problem:
            found[i] = problem
    if not found:
        return df
    hit = pl.col("_row").is_in(list(found))
    text = pl.col("_row").replace_strict(found, default=None, return_dtype=pl.String)
    return df.with_columns(
        _reason=pl.when(hit).then(pl.lit("mistyped_field")).otherwise(pl.col("_reason")),
        _detail=pl.when(hit).then(text).otherwise(pl.col("_detail")),
    )


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
