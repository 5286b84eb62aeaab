"""Output records as Kafka messages: key, JSON value, headers and a message id.

Every message carries the header ``cityvitals-id``, unique per logical
message, so that a consumer (and the sink itself, after a recovery) can tell
a repeat from a new message:

- a breach state change: ``<alert_id>/<sequence>``; its key is the alert id,
  so every change of one alert lands on one partition, in order;
- a dead letter: ``<source>#<partition>@<offset>`` of the rejected record; its
  value is the original bytes, unchanged, and the reason travels in headers;
- an indicator value: ``<indicator_id>|<entity_id>|<window_start>``;
- a risk level change: ``<risk_point_id>@<event_ts>``; its key is the risk
  point id. It goes to the breaches topic; the header ``kind`` (``breach`` or
  ``risk-level``) tells the two record types apart.

>>> from datetime import UTC, datetime
>>> t = datetime(2026, 5, 12, 6, 5, tzinfo=UTC)
>>> m = breach_messages([{"alert_id": "a1", "sequence": 0, "severity": "red", "event_ts": t}])[0]
>>> m.key, m.message_id
(b'a1', 'a1/0')
>>> m.value
b'{"alert_id":"a1","sequence":0,"severity":"red","event_ts":"2026-05-12T06:05:00Z"}'
>>> dict(m.headers)["severity"], dict(m.headers)["schema-version"]
(b'red', b'3')
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import orjson
import polars as pl

from schemas.families import SCHEMA_VERSION

__all__ = [
    "ID_HEADER",
    "OutMessage",
    "breach_messages",
    "dead_letter_messages",
    "indicator_messages",
    "risk_level_messages",
]

#: The header that names a message uniquely (see the module docstring).
ID_HEADER = "cityvitals-id"

_JSON = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC


@dataclass(frozen=True, slots=True)
class OutMessage:
    """One message for a Kafka topic."""

    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    message_id: str


def _headers(kind: str, message_id: str, **extra: str) -> tuple[tuple[str, bytes], ...]:
    fields = {"schema-version": SCHEMA_VERSION, "kind": kind, ID_HEADER: message_id, **extra}
    return tuple((k.replace("_", "-"), v.encode()) for k, v in fields.items())


def breach_messages(records: Iterable[dict]) -> list[OutMessage]:
    """Breach state changes (``BREACHES`` rows as dicts) as JSON messages keyed by alert."""
    return _json_messages(
        records,
        "breach",
        "alert_id",
        lambda r: f"{r['alert_id']}/{r['sequence']}",
        severity="severity",
    )


def _json_messages(
    records: Iterable[dict],
    kind: str,
    key: str | Callable[[dict], str],
    message_id: Callable[[dict], str],
    **headers: str,
) -> list[OutMessage]:
    """Records as JSON messages keyed by their ``key`` field (or what ``key`` makes of a
    record); ``headers`` name record fields (a missing or null one is an empty header)."""
    key_of = key if callable(key) else (lambda r: r[key])
    out = []
    for r in records:
        ident = message_id(r)
        out.append(
            OutMessage(
                key=key_of(r).encode(),
                value=orjson.dumps(r, option=_JSON),
                headers=_headers(kind, ident, **{h: r.get(f) or "" for h, f in headers.items()}),
                message_id=ident,
            )
        )
    return out


def dead_letter_messages(dead: pl.DataFrame) -> list[OutMessage]:
    """Dead letters: the original bytes as value; reason and origin in headers.

    >>> df = pl.DataFrame({"source": ["city.readings"], "partition": [2], "offset": [41],
    ...     "reason": ["not_json"], "detail": ["line 1: bad"], "raw": [b"{oops"]})
    >>> m = dead_letter_messages(df)[0]
    >>> m.value, m.message_id, dict(m.headers)["source-offset"]
    (b'{oops', 'city.readings#2@41', b'41')
    """
    out = []
    cols = ("source", "partition", "offset", "reason", "detail", "raw")
    for source, partition, offset, reason, detail, raw in dead.select(cols).iter_rows():
        where = source if partition is None else f"{source}#{partition}"
        message_id = f"{where}@{offset}"
        out.append(
            OutMessage(
                key=where.encode(),
                value=bytes(raw),
                headers=_headers(
                    "dead-letter",
                    message_id,
                    reason=reason,
                    detail=detail,
                    source_topic=source,
                    source_partition="" if partition is None else str(partition),
                    source_offset=str(offset),
                ),
                message_id=message_id,
            )
        )
    return out


def indicator_messages(values: pl.DataFrame) -> list[OutMessage]:
    """Indicator values as JSON messages keyed by indicator and entity.

    >>> from datetime import UTC, datetime
    >>> t = datetime(2026, 5, 12, 8, 30, tzinfo=UTC)
    >>> m = indicator_messages(pl.DataFrame({"indicator_id": ["fire.temperature"],
    ...     "entity_id": ["flat-1"], "window_start": [t], "value": [61.0], "level": ["red"]}))[0]
    >>> m.key, m.message_id, dict(m.headers)["level"]
    (b'fire.temperature|flat-1', 'fire.temperature|flat-1|2026-05-12T08:30:00+00:00', b'red')
    >>> ungraded = pl.DataFrame({"indicator_id": ["a.b"], "entity_id": ["e"], "window_start": [t]})
    >>> dict(indicator_messages(ungraded)[0].headers)["level"]
    b''
    """

    def key(row: dict) -> str:
        return f"{row['indicator_id']}|{row['entity_id']}"

    return _json_messages(
        values.iter_rows(named=True),
        "indicator-value",
        key,
        lambda row: f"{key(row)}|{row['window_start'].isoformat()}",
        level="level",
    )


def risk_level_messages(records: Iterable[dict]) -> list[OutMessage]:
    """Risk level changes (``RISK_LEVELS`` rows as dicts) as JSON messages keyed by risk point.

    >>> from datetime import UTC, datetime
    >>> t = datetime(2026, 5, 12, 8, 30, tzinfo=UTC)
    >>> m = risk_level_messages([{"risk_point_id": "rp-1", "to_level": "orange", "event_ts": t}])[0]
    >>> m.key, m.message_id, dict(m.headers)["kind"], dict(m.headers)["level"]
    (b'rp-1', 'rp-1@2026-05-12T08:30:00+00:00', b'risk-level', b'orange')
    """
    return _json_messages(
        records,
        "risk-level",
        "risk_point_id",
        lambda r: f"{r['risk_point_id']}@{r['event_ts'].isoformat()}",
        level="to_level",
    )
