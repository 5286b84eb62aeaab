"""Deterministic simulator of one district's afternoon of city "vital signs".

The simulated district ``D01`` (grids ``D01-G01`` ... ``D01-G12``) has a configurable number of
devices of eleven types (cameras, smoke detectors, temperature sensors, traffic detectors, people
counters, parking sensors, rain and water-level gauges, vibration and displacement sensors, gate
controllers). Every device sends a ``heartbeat`` every 60 s and every sensor one ``reading`` per
metric every 60 s; garages with gate controllers emit a ``gate`` event per car; reported events
run through the ``workorder`` life cycle. On top of a calm afternoon the simulator plays a fixed
script of incidents (a balcony fire, a school-dismissal traffic jam, a flash flood, ...) whose
ground truth :func:`incidents` returns, so a pipeline fed with :func:`generate` can be checked
against it.

Output is the wire format of ``schemas/families.py``: one JSON object per event, encoded with
``orjson.dumps``, ``ts`` in RFC 3339 UTC with millisecond precision. A small, deterministic
fraction of the lines (``Scenario.bad_rate``) is deliberately corrupted.

Everything is deterministic for a given :class:`Scenario`: the same bytes on every run, whatever
``batch_seconds`` is (only the grouping and the order inside a batch depend on it).

>>> import orjson
>>> scenario = Scenario(devices=200, minutes=60, seed=1)
>>> batch = next(generate(scenario))
>>> event = orjson.loads(batch[0])
>>> event["family"] in {"reading", "heartbeat", "gate", "workorder"}
True
>>> event["ts"].startswith("2026-05-12T06:00:")
True
>>> incidents(scenario)  # an hour is only the calm period
[]
>>> [incident.id for incident in incidents(Scenario())][:3]
['devices_silent', 'balcony_fire', 'balcony_fire_smoke']
>>> calm_period(scenario)[1].isoformat()
'2026-05-12T07:00:00+00:00'
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import orjson

__all__ = [
    "Incident",
    "RiskExpectation",
    "Scenario",
    "calm_period",
    "generate",
    "incidents",
    "manifest",
    "risk_expectations",
    "write_jsonl",
]

DISTRICT_ID = "D01"
GRID_IDS: tuple[str, ...] = tuple(f"{DISTRICT_ID}-G{i:02d}" for i in range(1, 13))

_MIN_MS = 60_000
_CALM_MINUTES = 60
_MAX_JITTER_MS = 9_999  # out-of-order delay inside a batch: always < 10 s
_CHUNK = 8_192  # events encoded at a time

# ---------------------------------------------------------------------------------------------
# Devices and metrics
# ---------------------------------------------------------------------------------------------

#: Same names and order as ``schemas.families.METRICS`` (a test checks they agree).
_METRICS: tuple[str, ...] = (
    "smoke",
    "temperature",
    "water_level",
    "rainfall",
    "vibration",
    "displacement",
    "traffic_flow",
    "traffic_speed",
    "travel_time",
    "people_count",
    "parking_occupied",
    "illegal_parking",
)
_M = {name: code for code, name in enumerate(_METRICS)}
_CAPACITY_METRICS = (_M["people_count"], _M["parking_occupied"])

#: (device_type, id prefix, share of all devices, battery powered, minimum count)
_TYPES: tuple[tuple[str, str, float, bool, int], ...] = (
    ("smoke_detector", "smk", 0.25, True, 1),
    ("temperature_sensor", "tmp", 0.15, True, 1),
    ("water_level_gauge", "wlg", 0.02, True, 1),
    ("rain_gauge", "rgg", 0.02, True, 3),
    ("vibration_sensor", "vib", 0.04, True, 1),
    ("displacement_sensor", "dsp", 0.03, True, 1),
    ("traffic_detector", "trf", 0.08, False, 3 + len(GRID_IDS)),
    ("people_counter", "ppl", 0.04, False, 1),
    ("parking_sensor", "prk", 0.06, False, 1),
    ("camera", "cam", 0.30, False, 20),
    ("gate_controller", "gtc", 0.01, False, 2),
)
_TYPE_NAMES = tuple(t[0] for t in _TYPES)
_T = {name: code for code, name in enumerate(_TYPE_NAMES)}

_SCHOOL_GRID = "D01-G04"  # garage-01 and the three nan2 arterials
_PLAZA_GRID = "D01-G01"
_FLOOD_GRID = "D01-G03"  # rain-G03-N and gauge-river-1
_CAMERA_GRID = "D01-G07"
_ORDERS_GRID = "D01-G05"
_FIRE_SITE = "bldg-08/flat-1203"
_FLATS_PER_FLOOR = 4
_FLOORS = 30

_DEPARTMENTS = ("urban_management", "traffic_police", "housing", "water_authority", "fire_safety")
_DEPARTMENT_P = (0.42, 0.20, 0.18, 0.12, 0.08)
_CLASSES = ("small", "big", "hard", "thorny")
_CLASS_P = (0.86, 0.09, 0.035, 0.015)
_SOURCES = ("grid_worker", "citizen", "ai_camera", "hotline")
_SOURCE_P = (0.40, 0.30, 0.20, 0.10)
#: minutes from report to dispatch, per class (uniform low, high); the allowance for small is 30.
_DISPATCH_MIN = ((2.0, 20.0), (20.0, 240.0), (60.0, 360.0), (120.0, 480.0))
_ORDERS_PER_MIN_PER_2000 = 2.5

# ---------------------------------------------------------------------------------------------
# The incident script (minutes from the start)
# ---------------------------------------------------------------------------------------------

_OUTAGE = (70.0, 95.0)
_OUTAGE_SHARE = 0.40
_FIRE = (112.0, 120.0)
_SMOKE = (112.5, 117.0)
_RAIN = (120.0, 190.0)
#: Ground response to the rain at the rain grid's risk-point sites: extra mm/s of road
#: vibration, extra mm of displacement at full response; below every rule's bound.
_GROUND_VIB = {"section-03": 2.6}
_GROUND_DISP = {"slope-03": 4.8}
_GROUND_TAU = 10.0
_RIVER_START, _RIVER_PEAK_AT, _RIVER_BASE, _RIVER_PEAK = 130.0, 210.0, 1.8, 4.3
_RIVER_FALL_TAU = 120.0
_RIVER_BAND = 2.5
#: when the falling river is back below the 2.5 m band
_RIVER_END = _RIVER_PEAK_AT + _RIVER_FALL_TAU * math.log(
    (_RIVER_PEAK - _RIVER_BASE) / (_RIVER_BAND - _RIVER_BASE)
)
_GARAGE = (140.0, 210.0)
_GARAGE_CAPACITY = 1100
_GARAGE_LIMIT = 1066  # 96.9 %: with the in/out churn inside a minute it never reaches 98 %
_JAM = (150.0, 210.0)
_JAM_PEAKS = (1200.0, 620.0, 480.0)  # seg-nan2-1, -2, -3
_CROWD = (185.0, 200.0)
_CROWD_PEAK = 1.25
_PLAZA_CAPACITY = 5000
_OVERDUE_REPORTS = (61.0, 63.2, 65.5, 68.1, 70.4, 73.6)
_OVERDUE_AFTER = 30.0

_INCIDENT_TABLE: tuple[tuple[str, str, str, str, str, float, float | None], ...] = (
    (
        "devices_silent",
        "40 % of grid D01-G07's cameras stop heartbeating for 25 minutes",
        "device.online_rate",
        f"camera/{_CAMERA_GRID}",
        "red",
        *_OUTAGE,
    ),
    (
        "balcony_fire",
        "Balcony fire in bldg-08 flat 1203: temperature climbs to ~85 °C",
        "fire.temperature",
        _FIRE_SITE,
        "red",
        *_FIRE,
    ),
    (
        "balcony_fire_smoke",
        "Smoke alarm in bldg-08 flat 1203 during the balcony fire",
        "fire.smoke_alarm",
        _FIRE_SITE,
        "red",
        *_SMOKE,
    ),
    (
        "heavy_rain",
        "Heavy rain over grid D01-G03: 20-29 mm per 15 minutes for about an hour",
        "flood.rainfall",
        "rain-G03-1",
        "orange",
        *_RAIN,
    ),
    (
        "river_rise",
        "The river at gauge-river-1 rises from 1.8 m to a 4.3 m flood peak",
        "flood.water_level",
        "gauge-river-1",
        "red",
        _RIVER_START,
        _RIVER_END,
    ),
    (
        "garage_fills",
        "School dismissal: the 1,100-spot garage-01 fills to ~97 %",
        "parking.occupancy_rate",
        "garage-01",
        "orange",
        *_GARAGE,
    ),
    (
        "dismissal_congestion",
        "School dismissal jam: 500 m of seg-nan2-1 takes ~20 minutes",
        "traffic.segment_travel_time",
        "seg-nan2-1",
        "red",
        *_JAM,
    ),
    (
        "crowd_surge",
        "Crowd surge on venue-plaza: ~1.25 x its 5,000-person capacity",
        "crowd.density_ratio",
        "venue-plaza",
        "red",
        *_CROWD,
    ),
    (
        "overdue_orders",
        "Six small work orders in grid D01-G05 are never dispatched and go overdue",
        "workorder.overdue",
        DISTRICT_ID,
        "orange",
        _OVERDUE_REPORTS[0] + _OVERDUE_AFTER,
        None,
    ),
)

#: Work orders the script adds to the random ones:
#: (report minute, class, department, grid, source, dispatch, arrive, close) in minutes from the
#: start; dispatch None means never dispatched (the overdue_orders incident).
_SCRIPTED_ORDERS: tuple[tuple[float, str, str, str, str, float | None, float, float], ...] = (
    *(
        (at, "small", "urban_management", _ORDERS_GRID, src, None, 0.0, 0.0)
        for at, src in zip(
            _OVERDUE_REPORTS,
            ("grid_worker", "citizen", "ai_camera", "grid_worker", "hotline", "citizen"),
            strict=True,
        )
    ),
    (112.8, "small", "fire_safety", "D01-G08", "hotline", 113.3, 115.9, 124.0),
    (158.0, "small", "traffic_police", _SCHOOL_GRID, "ai_camera", 160.5, 168.0, 195.0),
    (187.0, "small", "urban_management", _PLAZA_GRID, "ai_camera", 188.0, 192.0, 206.0),
    (198.0, "small", "water_authority", _FLOOD_GRID, "grid_worker", 200.5, 212.0, 236.0),
)

#: Risk points of thresholds/risk_points.yaml and what the rain must do to them: (id, grid,
#: the least peak level it must reach during the rain; "normal": it must stay normal).
_RISK_TABLE: tuple[tuple[str, str, str], ...] = (
    ("rp-road-G03-1", _FLOOD_GRID, "orange"),
    ("rp-slope-G03-1", _FLOOD_GRID, "orange"),
    ("rp-highrise-G03-1", _FLOOD_GRID, "yellow"),
    ("rp-road-G01-1", "D01-G01", "normal"),
    ("rp-slope-G02-1", "D01-G02", "normal"),
    ("rp-highrise-G01-1", "D01-G01", "normal"),
)


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """What to simulate. Invalid values raise ``ValueError`` naming the field."""

    devices: int = 2_000
    minutes: int = 240
    seed: int = 7
    start: datetime = datetime(2026, 5, 12, 6, 0, tzinfo=UTC)  # 14:00 Beijing time
    bad_rate: float = 0.0005

    def __post_init__(self) -> None:
        def whole(name: str, value: object, low: int) -> None:
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"Scenario.{name} must be an int >= {low}, got {value!r}")

        whole("devices", self.devices, 200)
        whole("minutes", self.minutes, _CALM_MINUTES)
        whole("seed", self.seed, 0)
        start = self.start
        if not isinstance(start, datetime):
            raise ValueError(f"Scenario.start must be a datetime, got {start!r}")
        offset = start.utcoffset()
        if offset is None:
            raise ValueError(f"Scenario.start must be timezone-aware UTC, got naive {start!r}")
        if offset != timedelta(0):
            raise ValueError(f"Scenario.start must be in UTC (offset 0), got offset {offset}")
        if start.microsecond % 1000:
            raise ValueError(f"Scenario.start must be a whole millisecond, got {start!r}")
        object.__setattr__(self, "start", start.replace(tzinfo=UTC))
        rate = self.bad_rate
        if (
            isinstance(rate, bool)
            or not isinstance(rate, int | float)
            or not math.isfinite(rate)
            or not 0.0 <= rate <= 0.25
        ):
            raise ValueError(f"Scenario.bad_rate must be a float in [0, 0.25], got {rate!r}")
        object.__setattr__(self, "bad_rate", float(rate))

    @property
    def end(self) -> datetime:
        """End of the simulated afternoon (exclusive)."""
        return self.start + timedelta(minutes=self.minutes)


@dataclass(frozen=True)
class Incident:
    """Ground truth of one scripted incident."""

    id: str
    title: str
    indicator_id: str
    entity_id: str
    severity: str  # the severity the pipeline must reach at peak
    start: datetime  # when the signal begins
    end: datetime  # when it is over, or the scenario end


def incidents(scenario: Scenario) -> list[Incident]:
    """The scripted incidents that start before the scenario ends, in script order.

    ``end`` is clipped to the end of the scenario.
    """
    out = []
    for ident, title, indicator, entity, severity, start_min, end_min in _INCIDENT_TABLE:
        if start_min >= scenario.minutes:
            continue
        end_min = scenario.minutes if end_min is None else min(end_min, scenario.minutes)
        out.append(
            Incident(
                id=ident,
                title=title,
                indicator_id=indicator,
                entity_id=entity,
                severity=severity,
                start=_at(scenario, start_min),
                end=_at(scenario, end_min),
            )
        )
    return out


@dataclass(frozen=True)
class RiskExpectation:
    """Ground truth of one risk point of the default risk-point file.

    A point that ``rises`` must first go up during the rain (``rise_from`` to
    ``rise_until``), reach at least ``min_peak``, and be back to normal by
    ``normal_by``; any other point must stay normal throughout.
    """

    risk_point_id: str
    grid_id: str
    rises: bool
    min_peak: str
    rise_from: datetime
    rise_until: datetime
    normal_by: datetime


def risk_expectations(scenario: Scenario) -> list[RiskExpectation]:
    """What the scenario's rain must do to the risk points (those of the rain grid rise).

    Only scenarios that last past the rain and its aftermath (240 minutes) hold them.

    >>> [(e.risk_point_id, e.min_peak) for e in risk_expectations(Scenario()) if e.rises]
    [('rp-road-G03-1', 'orange'), ('rp-slope-G03-1', 'orange'), ('rp-highrise-G03-1', 'yellow')]
    """
    return [
        RiskExpectation(
            risk_point_id=ident,
            grid_id=grid,
            rises=peak != "normal",
            min_peak=peak,
            rise_from=_at(scenario, _RAIN[0]),
            rise_until=_at(scenario, _RAIN[1]),
            normal_by=scenario.end,
        )
        for ident, grid, peak in _RISK_TABLE
    ]


def calm_period(scenario: Scenario) -> tuple[datetime, datetime]:
    """``[start, start + 60 min)``: nothing abnormal anywhere in the district."""
    return scenario.start, scenario.start + timedelta(minutes=_CALM_MINUTES)


def generate(scenario: Scenario, batch_seconds: int = 60) -> Iterator[list[bytes]]:
    """Yield the encoded events, one batch per ``batch_seconds`` of simulated time.

    Batch ``k`` holds exactly the events with ``ts`` in ``[start + k*b, start + (k+1)*b)``
    (the last batch is cut at the scenario end; empty windows give empty batches). Inside a
    batch, events are in arrival order: by ``ts`` plus a small transport delay, so an event
    is never more than 10 s older than one before it.
    """
    if not isinstance(scenario, Scenario):
        raise ValueError(f"scenario must be a Scenario, got {type(scenario).__name__}")
    if isinstance(batch_seconds, bool) or not isinstance(batch_seconds, int) or batch_seconds < 1:
        raise ValueError(f"batch_seconds must be an int >= 1, got {batch_seconds!r}")
    return _batches(_City(scenario), scenario.minutes, batch_seconds * 1000)


def write_jsonl(scenario: Scenario, path: Path) -> int:
    """Write every line of the scenario to ``path`` (one per line); return the line count."""
    count = 0
    with Path(path).open("wb") as f:
        for batch in generate(scenario):
            if batch:
                f.write(b"\n".join(batch))
                f.write(b"\n")
                count += len(batch)
    return count


def manifest(scenario: Scenario) -> dict:
    """A JSON-able description of the scenario and its ground truth."""
    calm_start, calm_end = calm_period(scenario)
    counts = _device_counts(scenario.devices)
    return {
        "generator": "cityvitals.simulate",
        "scenario": {
            "devices": scenario.devices,
            "minutes": scenario.minutes,
            "seed": scenario.seed,
            "start": _rfc3339(scenario.start),
            "bad_rate": scenario.bad_rate,
        },
        "end": _rfc3339(scenario.end),
        "district_id": DISTRICT_ID,
        "grid_ids": list(GRID_IDS),
        "calm_period": {"start": _rfc3339(calm_start), "end": _rfc3339(calm_end)},
        "incidents": [
            {
                "id": i.id,
                "title": i.title,
                "indicator_id": i.indicator_id,
                "entity_id": i.entity_id,
                "severity": i.severity,
                "start": _rfc3339(i.start),
                "end": _rfc3339(i.end),
            }
            for i in incidents(scenario)
        ],
        "risk_points": [
            {
                "risk_point_id": e.risk_point_id,
                "grid_id": e.grid_id,
                "rises": e.rises,
                "min_peak": e.min_peak,
                "rise_from": _rfc3339(e.rise_from),
                "rise_until": _rfc3339(e.rise_until),
                "normal_by": _rfc3339(e.normal_by),
            }
            for e in risk_expectations(scenario)
        ],
        "devices_by_type": {name: counts[name] for name in _TYPE_NAMES},
        "fixed_sites": [
            {"site_id": "garage-01", "grid_id": _SCHOOL_GRID, "capacity": _GARAGE_CAPACITY},
            *({"site_id": f"seg-nan2-{k}", "grid_id": _SCHOOL_GRID} for k in (1, 2, 3)),
            {"site_id": _FIRE_SITE, "grid_id": "D01-G08"},
            {"site_id": "venue-plaza", "grid_id": _PLAZA_GRID, "capacity": _PLAZA_CAPACITY},
            {"site_id": "gauge-river-1", "grid_id": _FLOOD_GRID},
            *({"site_id": f"rain-G03-{k}", "grid_id": _FLOOD_GRID} for k in (1, 2, 3)),
        ],
    }


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _at(scenario: Scenario, minutes: float) -> datetime:
    return scenario.start + timedelta(milliseconds=round(minutes * _MIN_MS))


def _rfc3339(ts: datetime) -> str:
    ts = ts.astimezone(UTC)
    return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


def _device_counts(devices: int) -> dict[str, int]:
    """Devices per type: fixed shares (largest remainder), minimums taken from the cameras."""
    raw = np.array([t[2] for t in _TYPES]) * devices
    counts = np.floor(raw).astype(np.int64)
    order = np.argsort(-(raw - counts), kind="stable")
    counts[order[: devices - int(counts.sum())]] += 1
    cam = _T["camera"]
    for code, spec in enumerate(_TYPES):
        need = spec[4] - counts[code]
        if need > 0:
            counts[code] += need
            counts[cam] -= need
    gate = _T["gate_controller"]
    if counts[gate] % 2:  # gates come in pairs (in, out)
        counts[gate] -= 1
        counts[cam] += 1
    return dict(zip(_TYPE_NAMES, counts.tolist(), strict=True))


def _smooth(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _fire_temperature(t: np.ndarray) -> np.ndarray:
    """Temperature in flat 1203 (°C) without noise; t in minutes."""
    rise = 26.0 + 60.0 * (1.0 - np.exp(-(np.clip(t, _FIRE[0], 116.0) - _FIRE[0]) / 0.8))
    peak = 26.0 + 60.0 * (1.0 - math.exp(-(116.0 - _FIRE[0]) / 0.8))
    fall = 26.0 + (peak - 26.0) * np.exp(-(np.maximum(t, 116.0) - 116.0) / 1.5)
    return np.where(t < _FIRE[0], 26.0, np.where(t < 116.0, rise, fall))


def _rain_rate(t: np.ndarray) -> np.ndarray:
    """Rain intensity over grid D01-G03 in mm/min; t in minutes."""
    taper = 0.9 - 0.8 * np.clip((t - 180.0) / 8.0, 0.0, 1.0)
    return np.select(
        [t < 120.0, t < 122.0, t < 150.0, t < 165.0, t < 180.0, t < 188.0],
        [0.0, 1.0, 1.55, 1.8, 1.5, taper],
        0.0,
    )


def _ground(t: np.ndarray) -> np.ndarray:
    """Ground response to the rain in D01-G03, 0 to 1; t in minutes.

    It builds up over the rain (from minute 122, full after 35 minutes) and dies
    away after it (10-minute time constant from minute 190): nil by minute 240.
    """
    build = _smooth((t - (_RAIN[0] + 2.0)) / 35.0)
    peak = _smooth(np.array((_RAIN[1] - _RAIN[0] - 2.0) / 35.0))
    decay = peak * np.exp(-(np.maximum(t, _RAIN[1]) - _RAIN[1]) / _GROUND_TAU)
    return np.where(t <= _RAIN[1], build, decay)


def _river_level(t: np.ndarray) -> np.ndarray:
    rise = _RIVER_BASE + (_RIVER_PEAK - _RIVER_BASE) * _smooth(
        (t - _RIVER_START) / (_RIVER_PEAK_AT - _RIVER_START)
    )
    fall = _RIVER_BASE + (_RIVER_PEAK - _RIVER_BASE) * np.exp(
        -(np.maximum(t, _RIVER_PEAK_AT) - _RIVER_PEAK_AT) / _RIVER_FALL_TAU
    )
    return np.where(t <= _RIVER_PEAK_AT, rise, fall)


def _garage01_share(t: float) -> float:
    """Target occupancy share of garage-01 at minute t."""
    if t < _GARAGE[0]:
        return 0.30
    if t < 165.0:
        return 0.30 + (0.965 - 0.30) * float(_smooth(np.float64((t - 140.0) / 25.0)))
    if t < 180.0:
        return 0.965
    if t < _GARAGE[1]:
        return 0.965 - (0.965 - 0.33) * float(_smooth(np.float64((t - 180.0) / 30.0)))
    return 0.30 + 0.03 * math.exp(-(t - _GARAGE[1]) / 30.0)


def _jam(t: np.ndarray) -> np.ndarray:
    """0..1 congestion level of the nan2 arterials; t in minutes."""
    up = _smooth((t - _JAM[0]) / 10.0)
    down = 1.0 - _smooth((t - 180.0) / 25.0)
    return np.where(t < 180.0, up, down)


def _crowd(t: np.ndarray) -> np.ndarray:
    """0..1 surge level of venue-plaza; t in minutes."""
    up = _smooth((t - _CROWD[0]) / 4.0)
    down = 1.0 - _smooth((t - 196.0) / 4.0)
    return np.where(t < 196.0, up, down)


def _delays(rng: np.random.Generator, n: int) -> np.ndarray:
    """Transport delays in ms: mostly a few hundred ms, 2 % up to 10 s (never 10 s)."""
    d = rng.exponential(250.0, n)
    late = rng.random(n) < 0.02
    d = np.where(late, rng.uniform(1000.0, _MAX_JITTER_MS, n), d)
    return np.minimum(d, _MAX_JITTER_MS).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# The simulated city
# ---------------------------------------------------------------------------------------------

_Table = dict[str, np.ndarray]


class _City:
    """Topology (built once) and the per-minute simulation with its small carried-over state."""

    def __init__(self, sc: Scenario) -> None:
        self.seed = sc.seed
        self.minutes = sc.minutes
        self.total_ms = sc.minutes * _MIN_MS
        self.bad_rate = sc.bad_rate
        self.start64 = np.datetime64(sc.start.replace(tzinfo=None), "ms")
        self.order_rate = _ORDERS_PER_MIN_PER_2000 * sc.devices / 2000.0
        rng = np.random.Generator(np.random.PCG64(sc.seed))
        counts = _device_counts(sc.devices)
        self._build_sites(rng, counts)
        self._build_devices(rng, counts)
        self._build_models(rng)
        # carried-over state
        self.occ = np.rint(self.gar_target(0.0)).astype(np.int64)
        self.heap: list[tuple[int, int, dict]] = []
        self.heap_seq = 0
        self.order_seq = 0

    # -- topology ------------------------------------------------------------------------------

    def _site(self, name: str, grid: str, capacity: float | None = None) -> int:
        self.site_names.append(name)
        self.site_grid.append(grid)
        self.site_cap.append(capacity)
        return len(self.site_names) - 1

    def _build_sites(self, rng: np.random.Generator, counts: dict[str, int]) -> None:
        self.site_names: list[str] = []
        self.site_grid: list[str] = []
        self.site_cap: list[float | None] = []
        grid = GRID_IDS

        # flats: smoke detector k and temperature sensor k share flat k (the fire flat first)
        n_flats = max(counts["smoke_detector"], counts["temperature_sensor"])
        flats = [self._site(_FIRE_SITE, "D01-G08")]
        j = 0
        per_bldg = _FLATS_PER_FLOOR * _FLOORS
        while len(flats) < n_flats:
            b, r = divmod(j, per_bldg)
            j += 1
            name = f"bldg-{b + 1:02d}/flat-{r // _FLATS_PER_FLOOR + 1:02d}"
            name += f"{r % _FLATS_PER_FLOOR + 1:02d}"
            if name != _FIRE_SITE:
                flats.append(self._site(name, grid[b % len(grid)]))
        self.flat_sites = np.array(flats, np.int64)

        # water-level gauges (the river first), then rain gauges (G03's named rain-G03-N)
        gauge_no = 0
        water = [self._site("gauge-river-1", _FLOOD_GRID)]
        for k in range(counts["water_level_gauge"] - 1):
            gauge_no += 1
            water.append(self._site(f"gauge-{gauge_no:02d}", grid[k % len(grid)]))
        self.water_sites = np.array(water, np.int64)
        rain, g03 = [], 0
        for k in range(counts["rain_gauge"]):
            g = _FLOOD_GRID if k < 3 else grid[(k - 3) % len(grid)]
            if g == _FLOOD_GRID:
                g03 += 1
                rain.append(self._site(f"rain-G03-{g03}", g))
            else:
                gauge_no += 1
                rain.append(self._site(f"gauge-{gauge_no:02d}", g))
        self.rain_sites = np.array(rain, np.int64)

        self.vib_sites = np.array(
            [
                self._site(f"section-{k + 1:02d}", grid[k % len(grid)])
                for k in range(counts["vibration_sensor"])
            ],
            np.int64,
        )
        self.disp_sites = np.array(
            [
                self._site(f"slope-{k + 1:02d}", grid[k % len(grid)])
                for k in range(counts["displacement_sensor"])
            ],
            np.int64,
        )

        # road segments: the three nan2 arterials by the school, then generic ones
        segs = [self._site(f"seg-nan2-{k}", _SCHOOL_GRID) for k in (1, 2, 3)]
        segs += [
            self._site(f"seg-{k + 1:03d}", grid[k % len(grid)])
            for k in range(counts["traffic_detector"] - 3)
        ]
        self.seg_sites = np.array(segs, np.int64)

        venues = [self._site("venue-plaza", _PLAZA_GRID, float(_PLAZA_CAPACITY))]
        vcap = np.round(rng.uniform(300.0, 3000.0, counts["people_counter"]) / 50.0) * 50.0
        venues += [
            self._site(f"venue-{k + 1:02d}", grid[k % len(grid)], float(vcap[k]))
            for k in range(counts["people_counter"] - 1)
        ]
        self.venue_sites = np.array(venues, np.int64)

        garages = [self._site("garage-01", _SCHOOL_GRID, float(_GARAGE_CAPACITY))]
        gcap = np.round(rng.uniform(80.0, 600.0, counts["parking_sensor"]) / 10.0) * 10.0
        garages += [
            self._site(f"garage-{k + 2:02d}", grid[k % len(grid)], float(gcap[k]))
            for k in range(counts["parking_sensor"] - 1)
        ]
        self.garage_sites = np.array(garages, np.int64)

        # cameras watch road segments of their own grid; the first 20 are in G07
        segs_by_grid: dict[str, list[int]] = {g: [] for g in grid}
        for s in segs:
            segs_by_grid[self.site_grid[s]].append(s)
        cams, used = [], dict.fromkeys(grid, 0)
        for k in range(counts["camera"]):
            g = _CAMERA_GRID if k < 20 else grid[(k - 20) % len(grid)]
            cams.append(segs_by_grid[g][used[g] % len(segs_by_grid[g])])
            used[g] += 1
        self.cam_sites = np.array(cams, np.int64)

        # gate controllers in pairs (in, out) on the first garages
        n_gated = counts["gate_controller"] // 2
        self.n_gated = n_gated
        self.gate_sites = np.repeat(self.garage_sites[:n_gated], 2)
        self.gate_ids = [
            f"{self.site_names[s]}-gate-{d}"
            for s in self.garage_sites[:n_gated]
            for d in ("in", "out")
        ]

    def _build_devices(self, rng: np.random.Generator, counts: dict[str, int]) -> None:
        per_type_sites = {
            "smoke_detector": self.flat_sites[: counts["smoke_detector"]],
            "temperature_sensor": self.flat_sites[: counts["temperature_sensor"]],
            "water_level_gauge": self.water_sites,
            "rain_gauge": self.rain_sites,
            "vibration_sensor": self.vib_sites,
            "displacement_sensor": self.disp_sites,
            "traffic_detector": self.seg_sites,
            "people_counter": self.venue_sites,
            "parking_sensor": self.garage_sites,
            "camera": self.cam_sites,
            "gate_controller": self.gate_sites,
        }
        self.block: dict[str, np.ndarray] = {}
        sites, types, ids = [], [], []
        offset = 0
        for code, (name, prefix, _share, _battery, _min) in enumerate(_TYPES):
            n = counts[name]
            site = per_type_sites[name]
            if len(site) != n:
                raise ValueError(f"internal: {name} has {len(site)} sites for {n} devices")
            self.block[name] = np.arange(offset, offset + n)
            offset += n
            sites.append(site)
            types.append(np.full(n, code, np.int64))
            ids += [f"{prefix}-{k + 1:06d}" for k in range(n)]
        self.n = offset
        self.dev_site = np.concatenate(sites)
        self.dev_type = np.concatenate(types)
        grid_code = {g: k for k, g in enumerate(GRID_IDS)}
        site_grid_code = np.array([grid_code[g] for g in self.site_grid], np.int64)
        self.dev_grid = site_grid_code[self.dev_site]
        sn, sg = self.site_names, self.site_grid
        #: (device_id, device_type, site_id, grid_id) per device, for the encoder
        self.info = [
            (did, _TYPE_NAMES[t], sn[s], sg[s])
            for did, t, s in zip(ids, self.dev_type.tolist(), self.dev_site.tolist(), strict=True)
        ]
        self.phase_hb = rng.integers(0, _MIN_MS, self.n)
        self.phase_rd = rng.integers(0, _MIN_MS, self.n)
        battery_type = np.array([t[3] for t in _TYPES])[self.dev_type]
        self.battery0 = np.where(battery_type, rng.uniform(35.0, 100.0, self.n), np.nan)

        cams = self.block["camera"]
        g07 = cams[self.dev_grid[cams] == grid_code[_CAMERA_GRID]]
        n_silent = round(_OUTAGE_SHARE * len(g07))
        self.silent = np.zeros(self.n, bool)
        self.silent[rng.choice(g07, n_silent, replace=False)] = True

        # devices carrying an incident's signal: their readings are never corrupted
        first = {name: int(block[0]) for name, block in self.block.items()}
        prot = np.zeros(self.n, bool)
        prot[[first["smoke_detector"], first["temperature_sensor"]]] = True
        prot[first["water_level_gauge"]] = True
        prot[[first["people_counter"], first["parking_sensor"]]] = True
        prot[self.block["traffic_detector"][:3]] = True
        rain = self.block["rain_gauge"]
        self.rain_g03 = self.dev_grid[rain] == grid_code[_FLOOD_GRID]
        prot[rain[self.rain_g03]] = True
        prot[g07] = True
        self.protected = prot

    def _build_models(self, rng: np.random.Generator) -> None:
        b = self.block
        self.temp_base = rng.uniform(23.0, 28.0, len(b["temperature_sensor"]))
        self.temp_phase = rng.uniform(0.0, 2 * math.pi, len(b["temperature_sensor"]))

        n = len(b["water_level_gauge"])
        self.water_base = rng.uniform(0.4, 2.0, n)
        self.water_base[0] = _RIVER_BASE
        self.water_phase = rng.uniform(0.0, 2 * math.pi, n)

        self.rain_scale = np.where(self.rain_g03, rng.uniform(0.93, 1.0, len(b["rain_gauge"])), 0.0)
        self.rain_scale[0] = 1.0  # rain-G03-1
        self.drizzle = np.where(self.rain_g03, 0.0, rng.uniform(0.02, 0.05, len(b["rain_gauge"])))

        self.vib_base = rng.uniform(0.3, 2.0, len(b["vibration_sensor"]))
        n = len(b["displacement_sensor"])
        self.disp_base = rng.uniform(0.5, 4.0, n)
        self.disp_period = rng.uniform(120.0, 600.0, n)
        self.disp_phase = rng.uniform(0.0, 2 * math.pi, n)

        # the ground of the rain grid's named sites responds to the rain (risk points)
        self.vib_ground, self.vib_ground_mm = self._responding(self.vib_sites, _GROUND_VIB)
        self.disp_ground, self.disp_ground_mm = self._responding(self.disp_sites, _GROUND_DISP)

        n = len(b["traffic_detector"])
        self.seg_len = rng.uniform(300.0, 800.0, n)
        self.seg_len[:3] = 500.0
        self.seg_speed = rng.uniform(34.0, 40.0, n)
        self.seg_speed[:3] = rng.uniform(34.0, 38.0, 3)
        self.seg_delay = rng.uniform(5.0, 30.0, n)
        self.seg_delay[:3] = rng.uniform(15.0, 25.0, 3)
        self.seg_flow = rng.uniform(8.0, 35.0, n)
        self.seg_peak = np.zeros(n)
        self.seg_peak[:3] = _JAM_PEAKS

        n = len(b["people_counter"])
        self.venue_cap = np.array([self.site_cap[s] for s in self.venue_sites])
        self.venue_base = rng.uniform(0.15, 0.40, n)
        self.venue_base[0] = 0.30
        self.venue_amp = rng.uniform(0.0, 0.08, n)
        self.venue_period = rng.uniform(60.0, 240.0, n)
        self.venue_phase = rng.uniform(0.0, 2 * math.pi, n)

        n = len(b["parking_sensor"])
        self.gar_cap = np.array([self.site_cap[s] for s in self.garage_sites])
        self.gar_base = rng.uniform(0.30, 0.60, n)
        self.gar_amp = rng.uniform(0.0, 0.06, n)
        self.gar_period = rng.uniform(90.0, 300.0, n)
        self.gar_phase = rng.uniform(0.0, 2 * math.pi, n)
        self.gar_limit = np.floor(0.75 * self.gar_cap).astype(np.int64)
        self.gar_limit[0] = _GARAGE_LIMIT
        self.gar_churn = self.gar_cap / 200.0
        self.gar_churn[0] = 1.2

        # illegal-parking detections: 0.1-0.6 expected per road segment per 15 min in all
        cams = self.cam_sites
        per_site = np.bincount(cams, minlength=len(self.site_names))[cams]
        site_rate = rng.uniform(0.1, 0.6, len(self.site_names))[cams]
        self.cam_rate = site_rate / 15.0 / per_site

    def _responding(self, sites: np.ndarray, amplitude: dict[str, float]):
        """Indices (into ``sites``) of the named sites that exist, and their amplitudes."""
        names = [self.site_names[s] for s in sites]
        here = [(names.index(n), a) for n, a in amplitude.items() if n in names]
        return np.array([i for i, _ in here], np.int64), np.array([a for _, a in here])

    def gar_target(self, t: float) -> np.ndarray:
        share = self.gar_base + self.gar_amp * np.sin(2 * math.pi * t / self.gar_period)
        target = self.gar_cap * share
        target[0] = _GARAGE_CAPACITY * _garage01_share(t)
        return target

    # -- one minute ----------------------------------------------------------------------------

    def _rng(self, stream: int, minute: int) -> np.random.Generator:
        return np.random.Generator(np.random.PCG64([self.seed, stream, minute]))

    def minute(self, m: int) -> tuple[_Table, _Table, _Table, _Table]:
        """Simulate minute ``m``: tables of readings, heartbeats, gate events and work orders."""
        t0 = m * _MIN_MS
        rng = self._rng(1, m)
        out_a, out_b = (round(x * _MIN_MS) for x in _OUTAGE)

        # heartbeats
        ts = t0 + self.phase_hb
        keep = rng.random(self.n) >= 0.01
        keep &= ~(self.silent & (ts >= out_a) & (ts < out_b))
        hb_dev = np.flatnonzero(keep)
        battery = np.maximum(np.round(self.battery0[hb_dev] - 0.0015 * m, 1), 1.0)
        hb = {"dev": hb_dev, "ts": ts[hb_dev], "battery": battery}

        # readings
        devs: list[np.ndarray] = []
        metrics: list[np.ndarray] = []
        values: list[np.ndarray] = []

        def emit(dev: np.ndarray, metric: str, value: np.ndarray) -> None:
            devs.append(dev)
            metrics.append(np.full(len(dev), _M[metric], np.int64))
            values.append(np.asarray(value, np.float64))

        def minutes_of(dev: np.ndarray) -> np.ndarray:
            return (t0 + self.phase_rd[dev]) / _MIN_MS

        b = self.block
        dev = b["smoke_detector"]
        smoke = np.zeros(len(dev))
        t_fire = (t0 + self.phase_rd[dev[0]]) / _MIN_MS
        smoke[0] = 1.0 if _SMOKE[0] <= t_fire < _SMOKE[1] else 0.0
        emit(dev, "smoke", smoke)

        dev = b["temperature_sensor"]
        t = minutes_of(dev)
        temp = self.temp_base + 0.4 * np.sin(2 * math.pi * t / 240.0 + self.temp_phase)
        temp[0] = _fire_temperature(t[:1])[0]
        temp += rng.uniform(-0.2, 0.2, len(dev))
        emit(dev, "temperature", np.round(temp, 1))

        dev = b["water_level_gauge"]
        t = minutes_of(dev)
        level = self.water_base + 0.03 * np.sin(2 * math.pi * t / 180.0 + self.water_phase)
        level[0] = _river_level(t[:1])[0]
        level += rng.uniform(-0.005, 0.005, len(dev))
        emit(dev, "water_level", np.round(level, 3))

        dev = b["rain_gauge"]
        t = minutes_of(dev)
        rate = 0.5 * (_rain_rate(t - 0.75) + _rain_rate(t - 0.25))
        rain = rate * (self.rain_scale + self.drizzle)
        rain += np.where(rate > 0, rng.uniform(-0.04, 0.04, len(dev)), 0.0)
        emit(dev, "rainfall", np.round(np.maximum(rain, 0.0), 1) + 0.0)

        dev = b["vibration_sensor"]
        vib = self.vib_base * rng.uniform(0.85, 1.15, len(dev))
        vib[self.vib_ground] += self.vib_ground_mm * _ground(minutes_of(dev[self.vib_ground]))
        emit(dev, "vibration", np.round(vib, 2))

        dev = b["displacement_sensor"]
        t = minutes_of(dev)
        disp = self.disp_base + 0.5 * np.sin(2 * math.pi * t / self.disp_period + self.disp_phase)
        disp += rng.uniform(-0.05, 0.05, len(dev))
        disp[self.disp_ground] += self.disp_ground_mm * _ground(t[self.disp_ground])
        emit(dev, "displacement", np.round(disp, 2))

        dev = b["traffic_detector"]
        t = minutes_of(dev)
        jam = np.zeros(len(dev))
        jam[:3] = _jam(t[:3])
        speed_free = self.seg_speed + rng.uniform(-2.5, 2.5, len(dev))
        tt_free = 3.6 * self.seg_len / speed_free + self.seg_delay + rng.uniform(-3, 3, len(dev))
        hump = 0.92 + 0.08 * np.sin(math.pi * np.clip((t - 160.0) / 20.0, 0.0, 1.0))
        tt_jam = self.seg_peak * hump * (1.0 + rng.uniform(-0.04, 0.04, len(dev)))
        tt = tt_free + jam * (tt_jam - tt_free)
        speed = speed_free * (tt_free - self.seg_delay) / (tt - self.seg_delay)
        flow = rng.poisson(self.seg_flow * (1.0 + 0.2 * t / 240.0) * (1.0 - 0.5 * jam))
        emit(dev, "traffic_flow", flow)
        emit(dev, "traffic_speed", np.round(speed, 1))
        emit(dev, "travel_time", np.round(tt, 1))

        dev = b["people_counter"]
        t = minutes_of(dev)
        share = self.venue_base + self.venue_amp * np.sin(
            2 * math.pi * t / self.venue_period + self.venue_phase
        )
        share[0] += (_CROWD_PEAK - share[0]) * _crowd(t[:1])[0]
        share += rng.uniform(-0.01, 0.01, len(dev))
        emit(dev, "people_count", np.rint(share * self.venue_cap))

        dev = b["camera"]
        emit(dev, "illegal_parking", rng.poisson(self.cam_rate))

        gates, occupied = self._garages(m)
        emit(b["parking_sensor"], "parking_occupied", occupied)

        rd_dev = np.concatenate(devs)
        rd_ts = t0 + self.phase_rd[rd_dev]
        live = ~(self.silent[rd_dev] & (rd_ts >= out_a) & (rd_ts < out_b))
        rd = {
            "dev": rd_dev[live],
            "metric": np.concatenate(metrics)[live],
            "value": np.concatenate(values)[live],
            "ts": rd_ts[live],
        }

        wo = self._orders(m)

        # transport delays (arrival order inside a batch)
        jit = self._rng(3, m)
        for table in (rd, hb, gates, wo):
            table["key"] = table["ts"] + _delays(jit, len(table["ts"]))

        # deliberate corruption: only readings of devices that carry no incident signal
        bad = np.full(len(rd["ts"]), -1, np.int64)
        if self.bad_rate > 0:
            bad_rng = self._rng(5, m)
            eligible = np.flatnonzero(~self.protected[rd["dev"]])
            total = sum(len(x["ts"]) for x in (rd, hb, gates, wo))
            if len(eligible):
                p = min(1.0, self.bad_rate * total / len(eligible))
                chosen = eligible[bad_rng.random(len(eligible)) < p]
                bad[chosen] = bad_rng.integers(0, len(_CORRUPTIONS), len(chosen))
        rd["bad"] = bad
        return rd, hb, gates, wo

    def _garages(self, m: int) -> tuple[_Table, np.ndarray]:
        """Move the garages through minute m; return gate events and sensor readings."""
        rng = self._rng(2, m)
        g = len(self.gar_cap)
        occ = self.occ
        target = self.gar_target(m + 1.0)
        desired = np.rint(target).astype(np.int64) + rng.integers(-2, 3, g)
        desired = np.clip(desired, 0, self.gar_limit)
        net = desired - occ
        churn = np.minimum(rng.poisson(self.gar_churn), occ)
        n_in = churn + np.maximum(net, 0)
        n_out = churn + np.maximum(-net, 0)
        in_g = np.repeat(np.arange(g), n_in)
        in_t = rng.integers(0, _MIN_MS, len(in_g))
        out_g = np.repeat(np.arange(g), n_out)
        out_t = rng.integers(0, _MIN_MS, len(out_g))
        psi = self.phase_rd[self.block["parking_sensor"]]
        before_in = np.bincount(in_g[in_t < psi[in_g]], minlength=g)
        before_out = np.bincount(out_g[out_t < psi[out_g]], minlength=g)
        reading = np.maximum(occ + before_in - before_out, 0).astype(np.float64)
        self.occ = desired.astype(np.int64)

        gated_in = in_g < self.n_gated
        gated_out = out_g < self.n_gated
        garage = np.concatenate([in_g[gated_in], out_g[gated_out]])
        direction = np.concatenate(
            [np.zeros(int(gated_in.sum()), np.int64), np.ones(int(gated_out.sum()), np.int64)]
        )
        ts = m * _MIN_MS + np.concatenate([in_t[gated_in], out_t[gated_out]])
        n = len(ts)
        lift = np.round(np.clip(rng.normal(300.0, 30.0, n), 200.0, 440.0), 1)
        plate = rng.integers(0, 2**63, n, dtype=np.int64)
        plate_ok = rng.random(n) >= 0.01
        gates = {
            "garage": garage,
            "direction": direction,
            "lift": lift,
            "plate": plate,
            "plate_ok": plate_ok,
            "ts": ts,
        }
        return gates, reading

    def _orders(self, m: int) -> _Table:
        """Report the new work orders of minute m and pop every status change due in it."""
        rng = self._rng(4, m)
        t0, t1 = m * _MIN_MS, (m + 1) * _MIN_MS
        n = int(rng.poisson(self.order_rate))
        report = t0 + rng.integers(0, _MIN_MS, n)
        cls = rng.choice(len(_CLASSES), n, p=_CLASS_P)
        dep = rng.choice(len(_DEPARTMENTS), n, p=_DEPARTMENT_P)
        grid = rng.integers(0, len(GRID_IDS), n)
        src = rng.choice(len(_SOURCES), n, p=_SOURCE_P)
        small = cls == 0
        lo = np.array([d[0] for d in _DISPATCH_MIN])[cls]
        hi = np.array([d[1] for d in _DISPATCH_MIN])[cls]
        dispatch = report + rng.uniform(lo, hi) * _MIN_MS
        arrive = (
            dispatch
            + np.where(small, rng.uniform(3.0, 20.0, n), rng.uniform(30.0, 180.0, n)) * _MIN_MS
        )
        close = (
            arrive
            + np.where(small, rng.uniform(5.0, 45.0, n), rng.uniform(60.0, 600.0, n)) * _MIN_MS
        )
        returned = rng.random(n) < 0.03
        reopen = close + rng.uniform(5.0, 30.0, n) * _MIN_MS
        reclose = reopen + rng.uniform(10.0, 40.0, n) * _MIN_MS
        happy = rng.random(n) < 0.975  # with the returns: ~95 % of closings satisfied
        happy_again = rng.random(n) < 0.90

        new: list[tuple[int, dict, str, list[tuple[float, str, bool | None]]]] = []
        for k in range(n):
            steps = [
                (dispatch[k], "dispatched", None),
                (arrive[k], "arrived", None),
                (close[k], "closed", bool(happy[k]) and not returned[k]),
            ]
            if returned[k]:
                steps += [
                    (reopen[k], "returned", None),
                    (reclose[k], "closed", bool(happy_again[k])),
                ]
            head = {
                "event_class": _CLASSES[cls[k]],
                "department": _DEPARTMENTS[dep[k]],
                "grid_id": GRID_IDS[grid[k]],
            }
            new.append((int(report[k]), head, _SOURCES[src[k]], steps))
        for at, klass, department, grid_id, source, disp, arr, clo in _SCRIPTED_ORDERS:
            at_ms = round(at * _MIN_MS)
            if t0 <= at_ms < t1:
                head = {"event_class": klass, "department": department, "grid_id": grid_id}
                steps = []
                if disp is not None:
                    steps = [
                        (disp * _MIN_MS, "dispatched", None),
                        (arr * _MIN_MS, "arrived", None),
                        (clo * _MIN_MS, "closed", True),
                    ]
                new.append((at_ms, head, source, steps))
        new.sort(key=lambda item: item[0])

        for at_ms, head, source, steps in new:
            self.order_seq += 1
            base = {
                "order_id": f"WO-{self.order_seq:07d}",
                "status": "",
                "event_class": head["event_class"],
                "department": head["department"],
                "grid_id": head["grid_id"],
                "district_id": DISTRICT_ID,
            }
            self._push(at_ms, {**base, "status": "reported", "source": source})
            for when, status, satisfied in steps:
                fields = {**base, "status": status}
                if status == "closed":
                    fields["satisfied"] = satisfied
                self._push(round(when), fields)

        ts, objs = [], []
        while self.heap and self.heap[0][0] < t1:
            when, _seq, fields = heapq.heappop(self.heap)
            ts.append(when)
            objs.append(fields)
        obj_arr = np.empty(len(objs), object)
        obj_arr[:] = objs
        return {"ts": np.array(ts, np.int64), "obj": obj_arr}

    def _push(self, when: int, fields: dict) -> None:
        if when < self.total_ms:  # later events are never emitted; keep the heap small
            self.heap_seq += 1
            heapq.heappush(self.heap, (when, self.heap_seq, fields))

    # -- encoding ------------------------------------------------------------------------------

    def encode(self, rd: _Table, hb: _Table, gt: _Table, wo: _Table) -> list[bytes]:
        """Encode one batch's tables and put the lines in arrival order."""
        n_rd, n_hb, n_gt, n_wo = (len(x["ts"]) for x in (rd, hb, gt, wo))
        total = n_rd + n_hb + n_gt + n_wo
        if total == 0:
            return []
        ts_all = np.concatenate([rd["ts"], hb["ts"], gt["ts"], wo["ts"]])
        key_all = np.concatenate([rd["key"], hb["key"], gt["key"], wo["key"]])

        def stamps(positions: np.ndarray | slice) -> list[str]:
            at = self.start64 + ts_all[positions].astype("timedelta64[ms]")
            return np.datetime_as_string(at, unit="ms", timezone="UTC").tolist()

        lines: list[bytes] = []
        order: list[np.ndarray] = []  # positions (in ts_all) of the lines, in encoding order

        # readings, those with a capacity apart; a chunk at a time to keep memory flat
        metric = rd["metric"]
        has_cap = np.isin(metric, _CAPACITY_METRICS)
        for with_cap in (False, True):
            idx = np.flatnonzero(has_cap == with_cap)
            for lo in range(0, len(idx), _CHUNK):
                part = idx[lo : lo + _CHUNK]
                encoded = self._readings(rd, part, stamps(part), with_cap)
                bad = rd["bad"][part]
                for pos in np.flatnonzero(bad >= 0).tolist():
                    encoded[pos] = _corrupt(encoded[pos], int(bad[pos]))
                lines += encoded
                order.append(part)

        # heartbeats, a battery level only from battery-powered devices
        has_battery = ~np.isnan(hb["battery"])
        for with_battery in (False, True):
            idx = np.flatnonzero(has_battery == with_battery)
            for lo in range(0, len(idx), _CHUNK):
                part = idx[lo : lo + _CHUNK]
                lines += self._heartbeats(hb, part, stamps(part + n_rd), with_battery)
                order.append(part + n_rd)

        if n_gt:
            first = n_rd + n_hb
            lines += self._gates(gt, stamps(slice(first, first + n_gt)))
            order.append(np.arange(first, first + n_gt))

        if n_wo:
            first = n_rd + n_hb + n_gt
            lines += _compact(
                [
                    orjson.dumps({"family": "workorder", "ts": ts, **fields})
                    for ts, fields in zip(
                        stamps(slice(first, total)), wo["obj"].tolist(), strict=True
                    )
                ]
            )
            order.append(np.arange(first, total))

        arrival = np.argsort(key_all[np.concatenate(order)], kind="stable")
        out = np.empty(total, object)
        out[:] = lines
        return out[arrival].tolist()

    def _readings(
        self, rd: _Table, idx: np.ndarray, stamps: list[str], with_cap: bool
    ) -> list[bytes]:
        dumps = orjson.dumps
        info = map(self.info.__getitem__, rd["dev"][idx].tolist())
        names = [_METRICS[c] for c in rd["metric"][idx].tolist()]
        values = rd["value"][idx].tolist()
        n = len(values)
        caps = (
            map(self.site_cap.__getitem__, self.dev_site[rd["dev"][idx]].tolist())
            if with_cap
            else [None] * n
        )
        out = []
        for t, d, name, v, cap in zip(stamps, info, names, values, caps, strict=True):
            obj = {
                "family": "reading",
                "ts": t,
                "device_id": d[0],
                "device_type": d[1],
                "metric": name,
                "value": v,
                "site_id": d[2],
                "grid_id": d[3],
                "district_id": DISTRICT_ID,
            }
            if cap is not None:
                obj["capacity"] = cap
            out.append(dumps(obj))
        return _compact(out)

    def _heartbeats(
        self, hb: _Table, idx: np.ndarray, stamps: list[str], with_battery: bool
    ) -> list[bytes]:
        dumps = orjson.dumps
        info = map(self.info.__getitem__, hb["dev"][idx].tolist())
        if with_battery:
            return _compact(
                [
                    dumps(
                        {
                            "family": "heartbeat",
                            "ts": t,
                            "device_id": d[0],
                            "device_type": d[1],
                            "grid_id": d[3],
                            "district_id": DISTRICT_ID,
                            "battery_pct": b,
                        }
                    )
                    for t, d, b in zip(stamps, info, hb["battery"][idx].tolist(), strict=True)
                ]
            )
        return _compact(
            [
                dumps(
                    {
                        "family": "heartbeat",
                        "ts": t,
                        "device_id": d[0],
                        "device_type": d[1],
                        "grid_id": d[3],
                        "district_id": DISTRICT_ID,
                    }
                )
                for t, d in zip(stamps, info, strict=True)
            ]
        )

    def _gates(self, gt: _Table, stamps: list[str]) -> list[bytes]:
        names, grids = self.site_names, self.site_grid
        sites = self.garage_sites[gt["garage"]].tolist()
        lines = []
        for t, site, g, direction, lift, plate, ok in zip(
            stamps,
            sites,
            gt["garage"].tolist(),
            gt["direction"].tolist(),
            gt["lift"].tolist(),
            gt["plate"].tolist(),
            gt["plate_ok"].tolist(),
            strict=True,
        ):
            obj = {
                "family": "gate",
                "ts": t,
                "garage_id": names[site],
                "gate_id": self.gate_ids[2 * g + direction],
                "direction": "out" if direction else "in",
                "lift_ms": lift,
            }
            if ok:
                obj["plate_hash"] = f"{plate:016x}"
            obj["grid_id"] = grids[site]
            obj["district_id"] = DISTRICT_ID
            lines.append(orjson.dumps(obj))
        return _compact(lines)


def _compact(lines: list[bytes]) -> list[bytes]:
    """Right-size orjson's output: each ``bytes`` it returns keeps a buffer of several KB.

    Encoded JSON never holds a raw newline, so joining and splitting is lossless.
    """
    if len(lines) < 2:  # join and split hand a lone item back as it is
        return [bytes(memoryview(line)) for line in lines]
    return b"\n".join(lines).split(b"\n")


# ---------------------------------------------------------------------------------------------
# Corruption
# ---------------------------------------------------------------------------------------------


def _truncated(obj: dict) -> bytes:
    return b'{"family": "reading", "ts": '


def _array(obj: dict) -> bytes:
    return orjson.dumps([obj])


def _value_string(obj: dict) -> bytes:
    return orjson.dumps({**obj, "value": "high"})


def _no_device_id(obj: dict) -> bytes:
    return orjson.dumps({k: v for k, v in obj.items() if k != "device_id"})


def _toaster(obj: dict) -> bytes:
    return orjson.dumps({**obj, "device_type": "toaster"})


def _ts_yesterday(obj: dict) -> bytes:
    return orjson.dumps({**obj, "ts": "yesterday"})


def _ts_1970(obj: dict) -> bytes:
    return orjson.dumps({**obj, "ts": "1970" + obj["ts"][4:]})


_CORRUPTIONS = (
    _truncated,
    _array,
    _value_string,
    _no_device_id,
    _toaster,
    _ts_yesterday,
    _ts_1970,
)


def _corrupt(line: bytes, kind: int) -> bytes:
    return _compact([_CORRUPTIONS[kind](orjson.loads(line))])[0]


# ---------------------------------------------------------------------------------------------
# Batching
# ---------------------------------------------------------------------------------------------


def _take(table: _Table, mask: np.ndarray) -> _Table:
    return {name: column[mask] for name, column in table.items()}


def _concat(tables: list[_Table]) -> _Table:
    if len(tables) == 1:
        return tables[0]
    return {name: np.concatenate([t[name] for t in tables]) for name in tables[0]}


def _batches(city: _City, minutes: int, step_ms: int) -> Iterator[list[bytes]]:
    total_ms = minutes * _MIN_MS
    buffered: list[tuple[int, tuple[_Table, ...]]] = []  # (minute, tables)
    next_minute = 0
    for a in range(0, total_ms, step_ms):
        b = min(a + step_ms, total_ms)
        while next_minute * _MIN_MS < b:
            buffered.append((next_minute, city.minute(next_minute)))
            next_minute += 1
        parts: list[list[_Table]] = [[], [], [], []]
        for minute, tables in buffered:
            lo, hi = minute * _MIN_MS, (minute + 1) * _MIN_MS
            if hi <= a or lo >= b:
                continue
            whole = a <= lo and hi <= b
            for family, table in enumerate(tables):
                if whole:
                    parts[family].append(table)
                else:
                    ts = table["ts"]
                    parts[family].append(_take(table, (ts >= a) & (ts < b)))
        buffered = [(mm, t) for mm, t in buffered if (mm + 1) * _MIN_MS > b]
        yield city.encode(*(_concat(p) for p in parts))
