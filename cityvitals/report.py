"""``cityvitals report``: the city overview as PNG plots and a short Markdown summary.

For people without a notebook. Every figure comes from the analysts' views
of :mod:`cityvitals.views` (the same ones the notebooks query), read through
one read-only connection, so the report and the notebooks can't disagree.

Files written to the output directory:

- ``summary.md``: sector states now, open alerts, alerts per sector and day,
  the lowest device online rates, 1510 dispatch compliance, risk points graded
  up and their level now, top breaches;
- ``sectors.png``: values out of normal per sector over the day;
- ``online_rate.png``: device online rate per type over the day (worst grid);
- ``sla.png``: on-time dispatch share per department;
- ``breaches.png``: alerts per sector by peak severity.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import duckdb
import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt
import polars as pl

from cityvitals.lake import Lake

__all__ = ["PLOTS", "SEVERITY_COLOURS", "overview", "write_report"]

#: Colours of the severities in every plot.
SEVERITY_COLOURS = {
    "normal": "#9e9e9e",
    "blue": "#1e88e5",
    "yellow": "#fdd835",
    "orange": "#fb8c00",
    "red": "#e53935",
}

#: The plot files, in the order the summary links them.
PLOTS = ("sectors.png", "online_rate.png", "sla.png", "breaches.png")

#: How many open alerts and top breaches the summary lists.
TOP = 10


def overview(con: duckdb.DuckDBPyConnection) -> dict[str, pl.DataFrame]:
    """The frames of the overview, each one ``SELECT`` from a view."""

    def q(sql: str) -> pl.DataFrame:
        return con.sql(sql).pl()

    return {
        "sector_now": q(
            "SELECT * FROM sector_now ORDER BY severity_rank(worst_level) DESC, sector"
        ),
        "sector_timeline": q("SELECT * FROM sector_timeline ORDER BY sector, bucket"),
        "open_alerts": q(
            "SELECT * FROM open_alerts ORDER BY severity_rank(severity) DESC, first_ts"
        ),
        "breaches_per_sector_day": q(
            "SELECT * FROM breaches_per_sector_day ORDER BY day, alerts DESC, sector"
        ),
        "online_rate": q(
            "SELECT device_type, window_start, min(online_rate) AS worst_grid, "
            "sum(online_rate * devices) / sum(devices) AS overall "
            "FROM device_online_rate GROUP BY ALL ORDER BY device_type, window_start"
        ),
        "online_rate_lowest": q(
            "SELECT device_type, grid_id, min(online_rate) AS lowest, "
            "arg_min(window_start, online_rate) AS at, sum(went_offline) AS went_offline "
            "FROM device_online_rate GROUP BY ALL HAVING min(online_rate) < 1 "
            "ORDER BY lowest, device_type, grid_id"
        ),
        "sla_department": q(
            "SELECT department, sum(dispatched) AS dispatched, sum(on_time) AS on_time, "
            "sum(on_time) / nullif(sum(dispatched), 0) AS compliance, sum(overdue) AS overdue "
            "FROM workorder_sla WHERE event_class = '*' GROUP BY ALL ORDER BY department"
        ),
        "risk_points_now": q(
            "SELECT * FROM risk_points_now "
            "ORDER BY severity_rank(level) DESC, severity_rank(peak_level) DESC, risk_point_id"
        ),
        "top_breaches": q(
            f"SELECT * FROM alerts ORDER BY severity_rank(peak_severity) DESC, first_ts LIMIT {TOP}"
        ),
    }


def write_report(lake: Lake, out: Path | str) -> Path:
    """Write the plots and ``summary.md`` into ``out``; return the summary's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    con = lake.connect()
    try:
        frames = overview(con)
    finally:
        con.close()
    _plot_sectors(frames["sector_timeline"], out / "sectors.png")
    _plot_online(frames["online_rate"], out / "online_rate.png")
    _plot_sla(frames["sla_department"], out / "sla.png")
    _plot_breaches(frames["breaches_per_sector_day"], out / "breaches.png")
    path = out / "summary.md"
    path.write_text(_markdown(frames, lake), encoding="utf-8")
    return path


def _table(df: pl.DataFrame, columns: list[str]) -> str:
    """A Markdown table of ``columns`` of ``df`` (ratios as percentages)."""
    if df.height == 0:
        return "_none_\n"
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in df.select(columns).iter_rows():
        lines.append(
            "| " + " | ".join(_cell(c, v) for c, v in zip(columns, row, strict=True)) + " |"
        )
    return "\n".join(lines) + "\n"


def _cell(column: str, v: object) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        if column in ("compliance", "lowest"):
            return f"{v:.1%}"
        return f"{v:g}"
    if isinstance(v, datetime):
        return v.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return str(v)


def _markdown(f: dict[str, pl.DataFrame], lake: Lake) -> str:
    alerts = f["breaches_per_sector_day"]
    total = int(alerts["alerts"].sum()) if alerts.height else 0
    sla = f["sla_department"]
    dispatched = int(sla["dispatched"].sum()) if sla.height else 0
    on_time = int(sla["on_time"].sum()) if sla.height else 0
    share = f"{on_time / dispatched:.1%}" if dispatched else "—"
    parts = [
        "# City overview\n",
        f"Lake: `{lake.root}`. Days are UTC.\n",
        "## Sectors now\n",
        _table(f["sector_now"], ["sector", "worst_level", "out_of_normal", "series", "as_of"]),
        f"![sectors](sectors.png)\n\n## Open alerts: {f['open_alerts'].height}\n",
        _table(
            f["open_alerts"].head(TOP),
            ["severity", "sector", "indicator_id", "entity_id", "first_ts", "last_state"],
        ),
        f"\n## Alerts: {total}\n",
        _table(alerts, ["day", "sector", "alerts", "red", "orange", "yellow", "blue"]),
        "![breaches](breaches.png)\n\n## Device online rates\n",
        "Grids and types whose online rate fell below 100 %:\n\n",
        _table(
            f["online_rate_lowest"].head(TOP),
            ["device_type", "grid_id", "lowest", "at", "went_offline"],
        ),
        "![online rate](online_rate.png)\n\n## 1510 dispatch compliance\n",
        f"Dispatched on time: {on_time} of {dispatched} ({share}); orders never dispatched by "
        "their deadline are counted under `overdue`.\n\n",
        _table(sla, ["department", "dispatched", "on_time", "compliance", "overdue"]),
        "![sla](sla.png)\n\n## Risk points\n",
        f"{f['risk_points_now'].height} risk points changed level; their level now (the others "
        "are normal):\n\n",
        _table(
            f["risk_points_now"],
            ["risk_point_id", "category", "grid_id", "level", "since", "peak_level", "changes"],
        ),
        "\n## Top breaches\n",
        _table(
            f["top_breaches"],
            ["peak_severity", "sector", "indicator_id", "entity_id", "first_ts", "peak_value"],
        ),
    ]
    return "\n".join(parts)


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_sectors(df: pl.DataFrame, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(10, 4))
    for (sector,), part in df.group_by("sector", maintain_order=True):
        ax.plot(part["bucket"], part["out_of_normal"], label=sector)
    ax.set(title="Values out of normal per sector (15-minute buckets)", ylabel="values")
    if df.height:
        ax.legend(fontsize="small", ncol=2)
    _save(fig, path)


def _plot_online(df: pl.DataFrame, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(10, 4))
    for (device_type,), part in df.group_by("device_type", maintain_order=True):
        ax.plot(part["window_start"], part["worst_grid"], label=device_type)
    ax.set(title="Device online rate, worst grid per type", ylabel="online", ylim=(0, 1.05))
    if df.height:
        ax.legend(fontsize="small", ncol=2)
    _save(fig, path)


def _plot_sla(df: pl.DataFrame, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.barh(df["department"].to_list(), df["compliance"].fill_null(0).to_list())
    ax.set(title="On-time dispatch share per department", xlim=(0, 1))
    _save(fig, path)


def _plot_breaches(df: pl.DataFrame, path: Path) -> None:
    by_sector = df.group_by("sector").agg(pl.col("red", "orange", "yellow", "blue").sum())
    fig, ax = plt.subplots(figsize=(8, 3.5))
    left = [0] * by_sector.height
    for level in ("red", "orange", "yellow", "blue"):
        counts = by_sector[level].to_list()
        ax.barh(by_sector["sector"].to_list(), counts, left=left, color=SEVERITY_COLOURS[level])
        left = [a + b for a, b in zip(left, counts, strict=True)]
    ax.set(title="Alerts per sector by peak severity", xlabel="alerts")
    _save(fig, path)
