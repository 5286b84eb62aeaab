"""Coverage report and the generated catalogue page."""

from __future__ import annotations

from indicators.definitions import load_catalog
from thresholds.coverage import CATALOG_PAGE, catalog_page, coverage, describe
from thresholds.rules import Rule, load_rules


def test_the_checked_in_catalogue_page_is_in_sync():
    cat = load_catalog()
    page = catalog_page(cat, load_rules(catalog=cat))
    assert CATALOG_PAGE.read_text(encoding="utf-8") == page, (
        "docs/catalog.md is stale: run `cityvitals catalog --write`"
    )


def test_the_page_lists_every_indicator_and_every_rule():
    cat = load_catalog()
    rules = load_rules(catalog=cat)
    page = catalog_page(cat, rules)
    for d in cat.indicators:
        assert f"| `{d.id}` | {d.name_zh}<br>{d.name_en} |" in page
    for r in rules.rules:
        assert f"`{r.id}`: " in page
    for m in cat.models:
        assert f"| `{m.id}` |" in page and f"model {m.kind} of `{m.indicator}`" in page


def test_coverage_counts_each_sector_and_a_total():
    cat = load_catalog()
    rows = coverage(cat, load_rules(catalog=cat))
    assert rows[-1].sector == "total"
    assert rows[-1].indicators == len(cat.ids)  # the models' derived indicators count too
    assert {r.sector for r in rows[:-1]} == {d.sector for d in cat.indicators}
    assert sum(r.indicators for r in rows[:-1]) == rows[-1].indicators


def test_coverage_of_an_indicator_without_rules_is_below_one():
    cat = load_catalog()
    rules = load_rules(catalog=cat)
    partial = rules.model_copy(update={"rules": rules.rules[1:]})
    rows = {r.sector: r for r in coverage(cat, partial)}
    missing = cat[rules.rules[0].indicator].sector
    assert rows[missing].share < 1.0
    assert rows["total"].with_thresholds == rows["total"].indicators - 1


def test_describe_spells_out_every_part_of_a_rule():
    rule = Rule.model_validate(
        {
            "id": "seg.slow",
            "indicator": "traffic.segment_speed",
            "direction": "below",
            "levels": {"yellow": 20, "red": 5},
            "hysteresis": 2,
            "for": "10m",
            "clear_for": 2,
            "no_data": {"after": "30m", "action": "alert", "severity": "yellow"},
            "schedules": [
                {
                    "name": "dismissal",
                    "days": ["mon", "fri"],
                    "from": "15:30",
                    "to": "17:30",
                    "levels": {"red": 3},
                }
            ],
            "overrides": [{"entities": ["seg-0*"], "levels": {"red": 8}}],
        }
    )
    assert describe(rule) == (
        "below: yellow ≤ 20, red ≤ 5; hysteresis 2; for 10m; clears after 2 windows; "
        "silent 30m → yellow; schedule dismissal (mon,fri 15:30–17:30): red ≤ 3; "
        "override seg-0*: red ≤ 8"
    )
    band = Rule.model_validate(
        {
            "id": "b",
            "indicator": "t",
            "direction": "outside",
            "measure": "change",
            "levels": {"red": [-5, 5]},
            "clear": {"red": [-4, 4]},
        }
    )
    assert (
        describe(band) == "change per window, outside: red outside [-5, 5]; clears at red [-4, 4]"
    )
