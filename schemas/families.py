"""Arrow schemas for everything that flows in and out of cityvitals.

These schemas are the single source of truth. The JSON Schemas in
``schemas/json/`` are generated from them (``cityvitals schemas --write``)
and a test fails when the two drift apart.

Input families arrive as one JSON object per event (the wire format, see
``schemas/README.md``); the ``family`` field says which family an object
belongs to. Timestamps travel as RFC 3339 strings and become
``timestamp[us, UTC]`` columns once decoded.

>>> sorted(INPUT_FAMILIES)
['gate', 'heartbeat', 'reading', 'workorder']
>>> INPUT_FAMILIES["reading"].field("value").type
DataType(double)
>>> METRIC_DEVICE_TYPE["temperature"]
'temperature_sensor'
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa

__all__ = [
    "BREACH_STATES",
    "DEAD_LETTER_REASONS",
    "DEVICE_STATUS",
    "DEVICE_STATUSES",
    "DEVICE_TYPES",
    "EVENT_CLASSES",
    "INPUT_FAMILIES",
    "METRICS",
    "METRIC_DEVICE_TYPE",
    "ORDER_DEADLINES",
    "ORDER_DEADLINE_STATES",
    "OUTPUT_TABLES",
    "RISK_CATEGORIES",
    "RISK_LEVELS",
    "SCHEMA_VERSION",
    "SEVERITIES",
    "TIMESTAMP",
    "WORKORDER_STATUSES",
    "polars_schema",
]

#: Bumped on any change to a schema that consumers can see.
SCHEMA_VERSION = "3"

#: The one timestamp type of the project: microseconds, timezone-aware UTC.
TIMESTAMP = pa.timestamp("us", tz="UTC")

DEVICE_TYPES: tuple[str, ...] = (
    "smoke_detector",
    "temperature_sensor",
    "water_level_gauge",
    "rain_gauge",
    "vibration_sensor",
    "displacement_sensor",
    "traffic_detector",
    "people_counter",
    "parking_sensor",
    "camera",
    "gate_controller",
)

#: Each metric a reading can carry, and the device type that measures it.
METRIC_DEVICE_TYPE: dict[str, str] = {
    "smoke": "smoke_detector",  # 0 = clear, 1 = alarm
    "temperature": "temperature_sensor",  # degrees Celsius
    "water_level": "water_level_gauge",  # metres above the gauge datum
    "rainfall": "rain_gauge",  # millimetres since the previous reading
    "vibration": "vibration_sensor",  # mm/s RMS
    "displacement": "displacement_sensor",  # millimetres from the baseline
    "traffic_flow": "traffic_detector",  # vehicles per minute
    "traffic_speed": "traffic_detector",  # km/h
    "travel_time": "traffic_detector",  # seconds to traverse the segment
    "people_count": "people_counter",  # persons in the area now
    "parking_occupied": "parking_sensor",  # occupied spots now
    "illegal_parking": "camera",  # AI detections since the previous reading
}
METRICS: tuple[str, ...] = tuple(METRIC_DEVICE_TYPE)

WORKORDER_STATUSES: tuple[str, ...] = ("reported", "dispatched", "arrived", "closed", "returned")
#: The "1510" classes: small at once, big within 1 day, hard within 5, thorny within 10.
EVENT_CLASSES: tuple[str, ...] = ("small", "big", "hard", "thorny")
REPORT_SOURCES: tuple[str, ...] = ("grid_worker", "citizen", "ai_camera", "hotline")
SEVERITIES: tuple[str, ...] = ("normal", "blue", "yellow", "orange", "red")
BREACH_STATES: tuple[str, ...] = ("opened", "escalated", "downgraded", "cleared")
DEAD_LETTER_REASONS: tuple[str, ...] = (
    "malformed_json",
    "not_an_object",
    "unknown_family",
    "missing_field",
    "mistyped_field",
    "unknown_device_type",
    "unknown_value",
    "metric_device_mismatch",
    "non_finite_value",
    "bad_timestamp",
    "timestamp_out_of_range",
    "late_event",
)


def _f(name: str, type_: pa.DataType, doc: str, *, nullable: bool = False, enum=None) -> pa.Field:
    meta = {"doc": doc}
    if enum is not None:
        meta["enum"] = ",".join(enum)
    return pa.field(name, type_, nullable=nullable, metadata=meta)


def _family(name: str, doc: str, *fields: pa.Field) -> pa.Schema:
    head = [
        _f("family", pa.string(), "Which input family this object belongs to.", enum=(name,)),
        _f("ts", TIMESTAMP, "When it happened (event time), RFC 3339 with an offset."),
    ]
    return pa.schema(head + list(fields), metadata={"doc": doc, "family": name})


_GRID = _f("grid_id", pa.string(), "The grid (smallest governance unit) it belongs to.")
_DISTRICT = _f("district_id", pa.string(), "The district it belongs to.")
_DEVICE = _f("device_id", pa.string(), "Stable id of the device.")
_DEVICE_TYPE = _f("device_type", pa.string(), "Kind of device.", enum=DEVICE_TYPES)

READING = _family(
    "reading",
    "One measurement from one sensor.",
    _DEVICE,
    _DEVICE_TYPE,
    _f("metric", pa.string(), "What was measured; fixes the unit.", enum=METRICS),
    _f("value", pa.float64(), "The measured value, finite, in the metric's unit."),
    _f("site_id", pa.string(), "The place the device watches: garage, segment, flat, venue..."),
    _GRID,
    _DISTRICT,
    _f(
        "capacity",
        pa.float64(),
        "Design capacity of the site for count metrics (spots, persons).",
        nullable=True,
    ),
)

HEARTBEAT = _family(
    "heartbeat",
    "A device saying it is alive.",
    _DEVICE,
    _DEVICE_TYPE,
    _GRID,
    _DISTRICT,
    _f("battery_pct", pa.float64(), "Remaining battery, percent.", nullable=True),
)

GATE = _family(
    "gate",
    "A barrier gate of a garage letting one vehicle in or out.",
    _f("garage_id", pa.string(), "The garage (site) the gate belongs to."),
    _f("gate_id", pa.string(), "Stable id of the gate."),
    _f("direction", pa.string(), "Entering or leaving.", enum=("in", "out")),
    _f("lift_ms", pa.float64(), "Milliseconds from plate read to barrier up."),
    _f("plate_hash", pa.string(), "Salted hash of the plate; never the plate.", nullable=True),
    _GRID,
    _DISTRICT,
)

WORKORDER = _family(
    "workorder",
    "One status change of a reported event (work order).",
    _f("order_id", pa.string(), "Stable id of the work order."),
    _f("status", pa.string(), "The status it moved to.", enum=WORKORDER_STATUSES),
    _f("event_class", pa.string(), "Class under the 1510 rule.", enum=EVENT_CLASSES),
    _f("department", pa.string(), "Department the order is routed to."),
    _GRID,
    _DISTRICT,
    _f("source", pa.string(), "Who reported it.", nullable=True, enum=REPORT_SOURCES),
    _f("satisfied", pa.bool_(), "Reporter's verdict, on 'closed'.", nullable=True),
)

INPUT_FAMILIES: dict[str, pa.Schema] = {
    "reading": READING,
    "heartbeat": HEARTBEAT,
    "gate": GATE,
    "workorder": WORKORDER,
}

INDICATOR_VALUES = pa.schema(
    [
        _f("indicator_id", pa.string(), "Stable id of the indicator, e.g. fire.temperature."),
        _f("sector", pa.string(), "Sector of the indicator library."),
        _f("entity_type", pa.string(), "What the value is computed per, e.g. device, grid."),
        _f("entity_id", pa.string(), "The entity; parts joined by '/' when keyed by several."),
        _f("window_start", TIMESTAMP, "Start of the event-time window (inclusive)."),
        _f("window_end", TIMESTAMP, "End of the event-time window (exclusive)."),
        _f("value", pa.float64(), "The indicator's value for the window."),
        _f("samples", pa.int64(), "How many input records contributed."),
        _f("unit", pa.string(), "Unit of the value."),
        _f("level", pa.string(), "Graded level of the value under its rule.", enum=SEVERITIES),
    ],
    metadata={"doc": "One value of one indicator for one entity and window."},
)

BREACHES = pa.schema(
    [
        _f("alert_id", pa.string(), "Stable id of the alert: one per breach life."),
        _f("sequence", pa.int64(), "0 for opened, then +1 per state change of the alert."),
        _f("state", pa.string(), "The state change this record announces.", enum=BREACH_STATES),
        _f("severity", pa.string(), "Severity after the change.", enum=SEVERITIES),
        _f("previous_severity", pa.string(), "Severity before the change.", enum=SEVERITIES),
        _f("rule_id", pa.string(), "The threshold rule that fired."),
        _f("indicator_id", pa.string(), "The indicator the rule watches."),
        _f("sector", pa.string(), "Sector of the indicator."),
        _f("entity_type", pa.string(), "What the indicator is computed per."),
        _f("entity_id", pa.string(), "The entity in breach."),
        _f(
            "measure",
            pa.string(),
            "What the rule judged: the window value, its change from the previous window,"
            " or the series' silence (no_data).",
            enum=("value", "change", "no_data"),
        ),
        _f("direction", pa.string(), "Which side is bad.", enum=("above", "below", "outside")),
        _f(
            "bound",
            pa.float64(),
            "The bound of the severity now in force, or the clearing bound passed on"
            " 'cleared'; null when the change is about silence (measure no_data).",
            nullable=True,
        ),
        _f("value", pa.float64(), "The window value that caused the change."),
        _f("peak_value", pa.float64(), "Worst value seen in the alert's life so far."),
        _f("first_ts", TIMESTAMP, "Start of the first window in breach."),
        _f("event_ts", TIMESTAMP, "End of the window that caused this change (event time)."),
        _f("emitted_at", TIMESTAMP, "Wall-clock time the record was produced."),
        _f("evidence", pa.list_(pa.float64()), "The latest window values, oldest first."),
    ],
    metadata={"doc": "One state change in the life of one alert."},
)

DEAD_LETTERS = pa.schema(
    [
        _f("received_at", TIMESTAMP, "Wall-clock time the record was rejected."),
        _f("source", pa.string(), "Where it came from: file path, topic or simulator."),
        _f("partition", pa.int64(), "Source partition.", nullable=True),
        _f("offset", pa.int64(), "Offset or line number (0-based) within the partition."),
        _f("reason", pa.string(), "Why it could not be used.", enum=DEAD_LETTER_REASONS),
        _f("detail", pa.string(), "Human-readable detail naming the field."),
        _f("raw", pa.binary(), "The original bytes, unchanged."),
    ],
    metadata={"doc": "An input record that could not be used, kept with the reason."},
)

INGEST_BATCHES = pa.schema(
    [
        _f("processed_at", TIMESTAMP, "Wall-clock time the batch was decoded."),
        _f("source", pa.string(), "Where it came from."),
        _f("partition", pa.int64(), "Source partition.", nullable=True),
        _f("first_offset", pa.int64(), "Offset of the batch's first record."),
        _f("events_in", pa.int64(), "Records in the batch."),
        _f("valid", pa.int64(), "Records that passed validation."),
        _f("dead_letters", pa.int64(), "Records turned into dead letters."),
        _f("max_event_ts", TIMESTAMP, "Latest event time in the batch.", nullable=True),
    ],
    metadata={"doc": "Accounting of every input batch: events_in = valid + dead_letters."},
)

DEVICE_STATUSES: tuple[str, ...] = ("offline", "online", "forgotten")

DEVICE_STATUS = pa.schema(
    [
        _DEVICE,
        _DEVICE_TYPE,
        _GRID,
        _DISTRICT,
        _f(
            "status",
            pa.string(),
            "offline: silent past its allowance; online: heard again; forgotten: silent"
            " for the catalogue's forget_after, dropped from the state.",
            enum=DEVICE_STATUSES,
        ),
        _f(
            "event_ts",
            TIMESTAMP,
            "When it happened (event time): the end of the allowance for offline, the"
            " heartbeat that ended the silence for online.",
        ),
        _f("last_seen_ts", TIMESTAMP, "The device's last heartbeat before the silence."),
        _f("silent_s", pa.float64(), "Seconds from last_seen_ts to event_ts."),
        _f("emitted_at", TIMESTAMP, "Wall-clock time the record was produced."),
    ],
    metadata={"doc": "A device going offline, coming back online, or being forgotten."},
)

ORDER_DEADLINE_STATES: tuple[str, ...] = ("overdue", "dispatched_late", "closed_overdue", "expired")

ORDER_DEADLINES = pa.schema(
    [
        _f("order_id", pa.string(), "Stable id of the work order."),
        _f("event_class", pa.string(), "Class under the 1510 rule.", enum=EVENT_CLASSES),
        _f("department", pa.string(), "Department the order is routed to."),
        _GRID,
        _DISTRICT,
        _f(
            "state",
            pa.string(),
            "overdue: not dispatched by its deadline; dispatched_late / closed_overdue: an"
            " overdue order dispatched, or closed without a dispatch; expired: an open order"
            " with no change for the catalogue's expire_after, dropped from the state.",
            enum=ORDER_DEADLINE_STATES,
        ),
        _f("reported_ts", TIMESTAMP, "When the order was reported.", nullable=True),
        _f(
            "deadline_ts",
            TIMESTAMP,
            "Report time plus the class's dispatch deadline.",
            nullable=True,
        ),
        _f(
            "event_ts",
            TIMESTAMP,
            "When it happened (event time): the deadline for overdue, the status change"
            " for dispatched_late and closed_overdue, last change + expire_after for expired.",
        ),
        _f(
            "overdue_s",
            pa.float64(),
            "Seconds past the deadline at event_ts; null without a known report.",
            nullable=True,
        ),
        _f("emitted_at", TIMESTAMP, "Wall-clock time the record was produced."),
    ],
    metadata={"doc": "A work order missing its 1510 dispatch deadline, and what became of it."},
)

#: Kinds of risk point (the articles' infrastructure risk list).
RISK_CATEGORIES: tuple[str, ...] = (
    "road_section",
    "slope",
    "high_rise",
    "pipeline",
    "bridge",
    "underpass",
    "construction_site",
    "riverbank",
)

_FACTOR = pa.struct(
    [
        pa.field("factor", pa.string(), nullable=False),
        pa.field("value", pa.float64(), nullable=True),
        pa.field("contribution", pa.float64(), nullable=False),
    ]
)

RISK_LEVELS = pa.schema(
    [
        _f("risk_point_id", pa.string(), "Stable id of the risk point (from the risk-point file)."),
        _f("category", pa.string(), "What kind of place it is.", enum=RISK_CATEGORIES),
        _GRID,
        _DISTRICT,
        _f("model", pa.string(), "The grading model that changed the level."),
        _f("from_level", pa.string(), "Risk level before the change.", enum=SEVERITIES),
        _f("to_level", pa.string(), "Risk level after the change.", enum=SEVERITIES),
        _f(
            "change",
            pa.string(),
            "upgraded: to a graver level; downgraded: to a milder one.",
            enum=("upgraded", "downgraded"),
        ),
        _f("score", pa.float64(), "Composite risk score in [0, 1] that caused the change."),
        _f("event_ts", TIMESTAMP, "End of the window that caused the change (event time)."),
        _f("emitted_at", TIMESTAMP, "Wall-clock time the record was produced."),
        _f(
            "factors",
            pa.list_(_FACTOR),
            "The factors that contributed most, largest first: factor name, its value"
            " (null for a static base factor without one) and its share of the score.",
        ),
    ],
    metadata={"doc": "A risk point's level graded up or down by its model."},
)

OUTPUT_TABLES: dict[str, pa.Schema] = {
    "indicator_values": INDICATOR_VALUES,
    "breaches": BREACHES,
    "device_status": DEVICE_STATUS,
    "order_deadlines": ORDER_DEADLINES,
    "risk_levels": RISK_LEVELS,
    "dead_letters": DEAD_LETTERS,
    "ingest_batches": INGEST_BATCHES,
}


def polars_schema(schema: pa.Schema, *, drop: tuple[str, ...] = ()) -> pl.Schema:
    """The Polars schema matching an Arrow schema of ours.

    >>> polars_schema(INGEST_BATCHES)["max_event_ts"]
    Datetime(time_unit='us', time_zone='UTC')
    """
    return pl.Schema(
        {
            name: dtype
            for name, dtype in pl.DataFrame(schema.empty_table()).schema.items()
            if name not in drop
        }
    )
