"""What a run did, read back from the lake with DuckDB.

The summary is computed from the output tables themselves, so it proves the
sinks as much as it reports: events in, valid, dead letters by reason,
breaches by severity, and for a simulated scenario whether each ground-truth
incident was detected, at which severity, and how long after it began.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from cityvitals.lake import Lake
from schemas.families import SEVERITIES

__all__ = ["EXAMPLE_QUERY", "check_incidents", "match_incidents", "summarize"]

EXAMPLE_QUERY = (
    "SELECT state, severity, indicator_id, entity_id, event_ts, value "
    "FROM breaches ORDER BY event_ts LIMIT 20"
)


def summarize(lake: Lake) -> dict:
    """Counts of one lake: the JSON of ``cityvitals run --summary-json``."""
    con = lake.connect()
    try:
        events_in, valid, dead = con.execute(
            "SELECT coalesce(sum(events_in), 0), coalesce(sum(valid), 0), "
            "coalesce(sum(dead_letters), 0) FROM ingest_batches"
        ).fetchone()
        by_reason = dict(
            con.execute(
                "SELECT reason, count(*) FROM dead_letters GROUP BY reason ORDER BY 2 DESC"
            ).fetchall()
        )
        opened = dict(
            con.execute(
                "SELECT severity, count(*) FROM breaches WHERE state = 'opened' GROUP BY severity"
            ).fetchall()
        )
        peak = dict(
            con.execute(
                "SELECT sev, count(*) FROM (SELECT alert_id, max_by(severity, rank) AS sev FROM "
                "(SELECT alert_id, severity, list_position(?, severity) AS rank FROM breaches) "
                "GROUP BY alert_id) GROUP BY sev",
                [list(SEVERITIES)],
            ).fetchall()
        )
        devices = dict(
            con.execute("SELECT status, count(*) FROM device_status GROUP BY status").fetchall()
        )
        orders = dict(
            con.execute("SELECT state, count(*) FROM order_deadlines GROUP BY state").fetchall()
        )
        changes = con.execute("SELECT count(*) FROM breaches").fetchone()[0]
        values = con.execute("SELECT count(*) FROM indicator_values").fetchone()[0]
        risk = dict(con.execute("SELECT change, count(*) FROM risk_levels GROUP BY 1").fetchall())
        raised = con.execute("SELECT count(DISTINCT risk_point_id) FROM risk_levels").fetchone()[0]
    finally:
        con.close()
    order = {s: i for i, s in enumerate(SEVERITIES)}
    return {
        "events_in": int(events_in),
        "valid": int(valid),
        "dead_letters": int(dead),
        "dead_letters_by_reason": {k: int(v) for k, v in by_reason.items()},
        "breaches": int(sum(opened.values())),
        "breaches_by_severity": {
            k: int(opened[k]) for k in sorted(opened, key=order.__getitem__, reverse=True)
        },
        "alerts_by_peak_severity": {
            k: int(peak[k]) for k in sorted(peak, key=order.__getitem__, reverse=True)
        },
        "breach_records": int(changes),
        "device_status": {k: int(devices[k]) for k in sorted(devices)},
        "order_deadlines": {k: int(orders[k]) for k in sorted(orders)},
        "indicator_values": int(values),
        "risk_level_changes": {k: int(risk.get(k, 0)) for k in ("upgraded", "downgraded")},
        "risk_points_changed": int(raised),
        "duckdb": str(lake.db_path),
    }


def check_incidents(lake: Lake, incidents, grace: timedelta = timedelta(minutes=30)) -> list[dict]:
    """:func:`match_incidents` against the breaches of a lake."""
    con = lake.connect()
    try:
        cur = con.execute(
            "SELECT indicator_id, entity_id, state, severity, event_ts FROM breaches "
            "WHERE state IN ('opened', 'escalated')"
        )
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    finally:
        con.close()
    return match_incidents(rows, incidents, grace)


def match_incidents(
    breaches: list[dict], incidents, grace: timedelta = timedelta(minutes=30)
) -> list[dict]:
    """For each ground-truth incident: detected?, peak severity, delay after its start.

    ``breaches`` are breach records (dicts with indicator_id, entity_id, state,
    severity and an aware ``event_ts``), from the lake or the breach topic. An
    incident counts as detected when an alert of its indicator and entity
    opens or escalates between its start and its end plus ``grace``; the
    delay runs from the incident's start to the first such record (event time).
    """
    order = {s: i for i, s in enumerate(SEVERITIES)}
    results = []
    for inc in incidents:
        rows = sorted(
            (b["event_ts"], b["severity"])
            for b in breaches
            if b["indicator_id"] == inc.indicator_id
            and b["entity_id"] == inc.entity_id
            and b["state"] in ("opened", "escalated")
            and inc.start <= b["event_ts"] <= inc.end + grace
        )
        peak = max((sev for _, sev in rows), key=order.__getitem__, default="normal")
        first: datetime | None = rows[0][0] if rows else None
        results.append(
            {
                "id": inc.id,
                "title": inc.title,
                "indicator_id": inc.indicator_id,
                "entity_id": inc.entity_id,
                "expected_severity": inc.severity,
                "peak_severity": peak,
                "detected": bool(rows) and order[peak] >= order[inc.severity],
                "delay_s": (first - inc.start).total_seconds() if first else None,
            }
        )
    return results
