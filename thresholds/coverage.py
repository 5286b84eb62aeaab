"""How the threshold rules cover the indicator catalogue: a report and a page.

``coverage`` counts, per sector, the indicators and the share that have
thresholds (the articles' district sets thresholds for 100 % of them);
``catalog_page`` renders every indicator with its thresholds as Markdown for
the people who run the city (``docs/catalog.md``, kept in sync by a test).

>>> from indicators.definitions import load_catalog
>>> from thresholds.rules import load_rules
>>> cat = load_catalog()
>>> rows = coverage(cat, load_rules(catalog=cat))
>>> all(r.share == 1.0 for r in rows)
True
>>> describe(load_rules(catalog=cat).for_indicator("fire.temperature")[0])
'above: yellow ≥ 45, orange ≥ 57, red ≥ 70; hysteresis 3'
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from indicators.definitions import Catalog
from thresholds.rules import Bands, Rule, RuleSet

__all__ = ["CATALOG_PAGE", "SectorCoverage", "catalog_page", "coverage", "describe"]

#: The generated page, checked in.
CATALOG_PAGE = Path(__file__).resolve().parent.parent / "docs" / "catalog.md"


@dataclass(frozen=True, slots=True)
class SectorCoverage:
    """Indicators of one sector and how many of them have thresholds."""

    sector: str
    indicators: int
    with_thresholds: int
    rules: int

    @property
    def share(self) -> float:
        return self.with_thresholds / self.indicators if self.indicators else 1.0


def coverage(catalog: Catalog, rules: RuleSet) -> list[SectorCoverage]:
    """Per sector, in catalogue order, then a ``total`` row."""
    rows: dict[str, list[int]] = {}
    for ident, d in _entries(catalog):
        n = len(rules.for_indicator(ident))
        row = rows.setdefault(d.sector, [0, 0, 0])
        row[0] += 1
        row[1] += n > 0
        row[2] += n
    out = [SectorCoverage(s, *row) for s, row in rows.items()]
    total = [sum(getattr(r, f) for r in out) for f in ("indicators", "with_thresholds", "rules")]
    return [*out, SectorCoverage("total", *total)]


def _entries(catalog: Catalog):
    """``(id, definition)`` of every indicator, then each model with its source's definition."""
    yield from ((d.id, d) for d in catalog.indicators)
    yield from ((m.id, catalog[m.indicator]) for m in catalog.models)


def _num(x: float) -> str:
    return f"{x:g}"


def _bands(bands: Bands, direction: str) -> str:
    if direction == "outside":
        parts = [f"{n} outside [{_num(lo)}, {_num(hi)}]" for n, (lo, hi) in bands.levels.items()]
    else:
        sign = "≥" if direction == "above" else "≤"
        parts = [f"{n} {sign} {_num(b)}" for n, b in bands.levels.items()]
    text = ", ".join(parts)
    if bands.clear:
        text += "; clears at " + ", ".join(f"{n} {_bound(b)}" for n, b in bands.clear.items())
    elif bands.hysteresis:
        text += f"; hysteresis {_num(bands.hysteresis)}"
    return text


def _bound(b) -> str:
    return f"[{_num(b[0])}, {_num(b[1])}]" if isinstance(b, tuple) else _num(b)


def _span(v: int | timedelta) -> str:
    if isinstance(v, int):
        return f"{v} window{'s' if v != 1 else ''}"
    s = int(v.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s % size == 0:
            return f"{s // size}{unit}"
    return f"{s}s"


def describe(rule: Rule) -> str:
    """One line an operator can read: bands, timing, silence, schedules and overrides."""
    head = "change per window, " if rule.measure == "change" else ""
    parts = [f"{head}{rule.direction}: {_bands(rule, rule.direction)}"]
    if rule.for_ != 1:
        parts.append(f"for {_span(rule.for_)}")
    if rule.clear_for != 1:
        parts.append(f"clears after {_span(rule.clear_for)}")
    if rule.min_samples > 1:
        parts.append(f"min {rule.min_samples} samples")
    if rule.no_data is not None:
        nd = rule.no_data
        what = nd.severity if nd.action == "alert" else nd.action
        parts.append(f"silent {_span(nd.after)} → {what}")
    for s in rule.schedules:
        days = ",".join(s.days) if len(s.days) < 7 else "daily"
        parts.append(
            f"schedule {s.name} ({days} {s.from_:%H:%M}–{s.to:%H:%M}): {_bands(s, rule.direction)}"
        )
    for o in rule.overrides:
        when = f" during {o.schedule}" if o.schedule else ""
        parts.append(f"override {', '.join(o.entities)}{when}: {_bands(o, rule.direction)}")
    return "; ".join(parts)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def catalog_page(catalog: Catalog, rules: RuleSet) -> str:
    """The catalogue with its thresholds, as Markdown."""
    cov = coverage(catalog, rules)
    total = cov[-1]
    lines = [
        "# The vital-sign indicator catalogue",
        "",
        "<!-- Generated from indicators/catalog.yaml and thresholds/rules.yaml by",
        "     `cityvitals catalog --write`; do not edit by hand. -->",
        "",
        f"{total.indicators} indicators in {len(cov) - 1} sectors, "
        f"{total.rules} threshold rules; schedules read local time in {rules.timezone}. "
        "Levels, mild to grave: blue, yellow, orange, red; below blue is normal. "
        "A level is reached at its bound (≥ for `above`, ≤ for `below`, at or beyond "
        "either end for `outside`) and left only once the value is back past its "
        "clearing bound (the bound moved back by the hysteresis, or `clears at`).",
        "",
        "| sector | indicators | with thresholds | share | rules |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {r.sector} | {r.indicators} | {r.with_thresholds} | {r.share:.0%} | {r.rules} |"
        for r in cov
    ]
    for sector in [r.sector for r in cov[:-1]]:
        lines += [
            "",
            f"## {sector}",
            "",
            "| id | name | per | window | computed as | unit | thresholds | description |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        models = {m.id: m for m in catalog.models}
        for ident, d in _entries(catalog):
            if d.sector != sector:
                continue
            thresholds = "<br>".join(f"`{r.id}`: {describe(r)}" for r in rules.for_indicator(ident))
            m = models.get(ident)
            cells = [
                f"`{ident}`",
                f"{d.name_zh}<br>{d.name_en}" + (" (anomaly score)" if m else ""),
                d.entity.type,
                _span(d.window),
                f"model {m.kind} of `{m.indicator}`" if m else d.aggregation,
                "score" if m else d.unit,
                thresholds or "**none**",
                m.description if m else d.description,
            ]
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"
