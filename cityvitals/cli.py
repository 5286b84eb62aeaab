"""The ``cityvitals`` command.

``cityvitals demo`` runs a simulated district afternoon through the real
dataflow; ``cityvitals run`` processes a recorded JSON-lines file;
``cityvitals simulate`` writes the scenario; ``cityvitals schemas`` checks or
regenerates the JSON Schemas; ``cityvitals check`` loads every indicator and
rule and the department rating, and reports threshold coverage; ``cityvitals catalog`` checks or
regenerates the catalogue page. For the Kafka flow in a container: ``cityvitals prepare`` creates
its lake and recovery store once, ``cityvitals health`` is the image's health check.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from pathlib import Path

import click
import orjson

from cityvitals.lake import Lake
from cityvitals.yamlconf import ConfigError

__all__ = ["main"]


def _config(**settings):
    from flows.config import PipelineConfig

    given = {k: v for k, v in settings.items() if v is not None}
    return PipelineConfig.from_mapping(given, source="command line")


def _run_flow(source, config) -> float:
    from bytewax.testing import run_main

    from flows import collector, shutdown
    from flows.city import build

    shutdown.install()  # SIGTERM: stop reading, flush the lake sinks, exit 0
    collector.tune()
    started = time.perf_counter()
    run_main(build(source, config))
    return time.perf_counter() - started


def _print_summary(s: dict, seconds: float) -> None:
    rate = s["events_in"] / seconds if seconds else 0.0
    click.echo(f"events in      {s['events_in']:>10,}   ({seconds:.1f} s, {rate:,.0f} events/s)")
    click.echo(f"valid          {s['valid']:>10,}")
    click.echo(f"dead letters   {s['dead_letters']:>10,}")
    for reason, n in s["dead_letters_by_reason"].items():
        click.echo(f"  {reason:<22}{n:>8,}")
    click.echo(f"indicator rows {s['indicator_values']:>10,}")
    click.echo(f"alerts opened  {s['breaches']:>10,}   (by peak severity)")
    for sev, n in s["alerts_by_peak_severity"].items():
        click.echo(f"  {sev:<22}{n:>8,}")
    went = s["device_status"].get("offline", 0)
    click.echo(f"devices offline {went:>9,}   (went offline; back online: ", nl=False)
    click.echo(f"{s['device_status'].get('online', 0):,})")
    overdue = s["order_deadlines"].get("overdue", 0)
    late = s["order_deadlines"].get("dispatched_late", 0)
    click.echo(
        f"orders overdue  {overdue:>9,}   (past their 1510 deadline; dispatched late: {late:,})"
    )
    up, down = s["risk_level_changes"]["upgraded"], s["risk_level_changes"]["downgraded"]
    click.echo(
        f"risk changes   {up + down:>10,}   (upgraded: {up:,}, downgraded: {down:,}; "
        f"risk points: {s['risk_points_changed']:,})"
    )


def _fresh_out(out: Path, overwrite: bool) -> None:
    lake = Lake(out)
    if lake.has_data():
        if not overwrite:
            raise click.UsageError(
                f"{out} already holds a lake; pass --overwrite to replace it, "
                "or choose another --out"
            )
        lake.clear()


@click.group()
@click.version_option(package_name="cityvitals")
def main() -> None:
    """cityvitals: real-time city vital-sign indicators, breaches and risk levels."""


def _scenario(devices, minutes, seed, bad_rate=None):
    from cityvitals.simulate import Scenario

    kwargs = {"devices": devices, "minutes": minutes, "seed": seed}
    if bad_rate is not None:
        kwargs["bad_rate"] = bad_rate
    try:
        return Scenario(**kwargs)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


@main.command()
@click.option("--minutes", default=240, show_default=True, help="Length of the afternoon.")
@click.option("--devices", default=2_000, show_default=True, help="Devices in the district.")
@click.option("--seed", default=7, show_default=True, help="Random seed (same seed, same city).")
@click.option("--out", default="data", show_default=True, type=click.Path(path_type=Path))
def demo(minutes: int, devices: int, seed: int, out: Path) -> None:
    """Watch a simulated district afternoon through the real dataflow."""
    from cityvitals.simulate import generate, incidents
    from cityvitals.summary import EXAMPLE_QUERY, check_incidents, summarize
    from flows.sources import BatchIteratorSource

    scenario = _scenario(devices, minutes, seed)
    _fresh_out(out, overwrite=True)
    config = _config(out=out)
    click.echo(
        f"Simulating district D01: {devices:,} devices, {minutes} minutes from "
        f"{scenario.start:%Y-%m-%d %H:%M} UTC, seed {seed} ..."
    )
    source = BatchIteratorSource("simulator", lambda: generate(scenario))
    seconds = _run_flow(source, config)
    lake = Lake(out)
    s = summarize(lake)
    _print_summary(s, seconds)
    click.echo("\nground-truth incidents")
    for r in check_incidents(lake, incidents(scenario)):
        mark = "detected" if r["detected"] else "MISSED  "
        delay = f"{r['delay_s'] / 60:5.1f} min after start" if r["delay_s"] is not None else ""
        click.echo(
            f"  {mark} {r['id']:<22} {r['indicator_id']:<28} {r['entity_id']:<20} "
            f"peak {r['peak_severity']:<7} (expected {r['expected_severity']}) {delay}"
        )
    click.echo(f"\nDuckDB: {lake.db_path}  (open it read-only, even while a run is writing)")
    click.echo(
        f"  python -c \"import duckdb; duckdb.connect('{lake.db_path}', read_only=True)"
        f".sql('{EXAMPLE_QUERY}').show()\""
    )


@main.command()
@click.option(
    "--input",
    "input_",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON-lines file of wire records.",
)
@click.option("--out", default="data", show_default=True, type=click.Path(path_type=Path))
@click.option(
    "--summary-json",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the run summary here as JSON.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing lake in --out.")
@click.option("--batch-size", type=int, help="Lines per batch (default 50000).")
@click.option("--allowed-lateness", help="How late an event may arrive, e.g. 30s.")
def run(
    input_: Path,
    out: Path,
    summary_json: Path | None,
    overwrite: bool,
    batch_size,
    allowed_lateness,
) -> None:
    """Process recorded events through the same flow."""
    from cityvitals.summary import summarize
    from flows.sources import JsonLinesSource

    config = _config(out=out, batch_size=batch_size, allowed_lateness=allowed_lateness)
    _fresh_out(out, overwrite)
    seconds = _run_flow(JsonLinesSource(input_, config.batch_size), config)
    s = summarize(Lake(out))
    _print_summary(s, seconds)
    if summary_json:
        summary_json.write_bytes(
            orjson.dumps({**s, "seconds": round(seconds, 3)}, option=orjson.OPT_INDENT_2)
        )


def _kafka_settings(ctx, param, values: tuple[str, ...]) -> dict[str, str]:
    settings = {}
    for item in values:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise click.BadParameter(
                f"expected KEY=VALUE (a librdkafka setting, e.g. security.protocol=SASL_SSL), "
                f"got {item!r}"
            )
        settings[key] = value
    return settings


def _servers(ctx, param, value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise click.BadParameter("expected HOST:PORT[,HOST:PORT...], got an empty value")
    return None if value is None else value.strip()


def _finite_rate(ctx, param, value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"expected a finite number of events per second, got {value}")
    return value


#: simulate's options that only make sense with --bootstrap
_PUBLISH_ONLY = ("partitions", "rate", "kafka_config")


@main.command()
@click.option("--minutes", default=240, show_default=True)
@click.option("--devices", default=2_000, show_default=True)
@click.option("--seed", default=7, show_default=True)
@click.option("--bad-rate", type=float, help="Share of deliberately broken lines (default 0.0005).")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    help="JSON-lines file, or - for standard output. Without --bootstrap the default is -; "
    "with --bootstrap nothing is written unless --out is given (then the same lines go there "
    "too).",
)
@click.option(
    "--manifest",
    "manifest_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the incidents manifest (JSON) here. Default: FILE.manifest.json next to "
    "--out FILE; none when nothing is written to a file.",
)
@click.option(
    "--bootstrap",
    metavar="HOST:PORT",
    callback=_servers,
    help="Publish to Kafka at HOST:PORT[,HOST:PORT...] instead of writing standard output: "
    "each line to its family's input topic (city.readings, city.heartbeats, city.gates, "
    "city.workorders), keyed by device, gate or order.",
)
@click.option(
    "--partitions",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Partitions of the input topics created when missing (existing ones are kept).",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    callback=_finite_rate,
    metavar="EVENTS_PER_S",
    help="Publish at most this many events per second (default: as fast as possible).",
)
@click.option(
    "--kafka-config",
    multiple=True,
    callback=_kafka_settings,
    metavar="KEY=VALUE",
    help="librdkafka setting for the Kafka clients, e.g. security.protocol=SASL_SSL (repeatable).",
)
@click.pass_context
def simulate(
    ctx: click.Context,
    minutes: int,
    devices: int,
    seed: int,
    bad_rate: float | None,
    out: Path | None,
    manifest_path: Path | None,
    bootstrap: str | None,
    partitions: int,
    rate: float | None,
    kafka_config: dict[str, str],
) -> None:
    """Write (or --bootstrap: publish to Kafka) the simulated afternoon as JSON lines.

    The incidents manifest goes to --manifest, or next to --out FILE.
    """
    from cityvitals.simulate import generate, manifest, write_jsonl

    scenario = _scenario(devices, minutes, seed, bad_rate)
    if bootstrap is None:
        for name in _PUBLISH_ONLY:
            if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT:
                flag = "--" + name.replace("_", "-")
                raise click.UsageError(f"{flag} needs --bootstrap", ctx)
        out = out or Path("-")
    to_stdout = out is not None and str(out) == "-"
    if manifest_path is None and out is not None and not to_stdout:
        manifest_path = out.with_name(out.name + ".manifest.json")
    if manifest_path is not None:
        manifest_path.write_bytes(orjson.dumps(manifest(scenario), option=orjson.OPT_INDENT_2))
    if bootstrap is not None:
        _publish_scenario(ctx, scenario, out, bootstrap, partitions, rate, kafka_config)
    elif to_stdout:
        stream = sys.stdout.buffer
        for batch in generate(scenario):
            stream.write(b"".join(line + b"\n" for line in batch))
    else:
        n = write_jsonl(scenario, out)
        click.echo(f"wrote {n:,} lines to {out} and the incidents to {manifest_path}", err=True)


def _publish_scenario(ctx, scenario, out, bootstrap, partitions, rate, client) -> None:
    from cityvitals.publish import PublishError, check_settings, publish
    from cityvitals.simulate import generate
    from cityvitals.yamlconf import validate_data
    from flows.config import KafkaConfig

    try:
        kafka = validate_data(
            {"bootstrap_servers": bootstrap, "client": client}, KafkaConfig, "--kafka-config"
        )
    except ConfigError as exc:  # --bootstrap is checked already: the client settings are bad
        raise click.UsageError("; ".join(exc.problems), ctx) from exc
    try:
        check_settings(kafka)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param_hint="'--kafka-config'") from exc
    batches = generate(scenario)
    with contextlib.ExitStack() as stack:
        if out is not None:
            batches = _tee(
                batches,
                sys.stdout.buffer if str(out) == "-" else stack.enter_context(out.open("wb")),
            )
        try:
            stats = publish(batches, kafka, partitions=partitions, rate=rate)
        except PublishError as exc:
            raise click.ClickException(str(exc)) from exc
    topics = ", ".join(f"{topic} {n:,}" for topic, n in stats.messages.items())
    click.echo(
        f"published {stats.total:,} events in {stats.seconds:.1f} s "
        f"({stats.events_per_second:,.0f} events/s): {topics}",
        err=True,
    )


def _tee(batches, stream):
    """Pass the batches on, writing their lines to ``stream`` on the way."""
    for batch in batches:
        stream.write(b"".join(line + b"\n" for line in batch))
        yield batch


@main.command()
@click.option("--write", is_flag=True, help="Regenerate schemas/json from the Arrow schemas.")
def schemas(write: bool) -> None:
    """Check (or --write) the JSON Schemas generated from the Arrow schemas."""
    from schemas.jsonschema import JSON_DIR, drift, write_all

    if write:
        for path in write_all():
            click.echo(f"wrote {path}")
        return
    stale = drift()
    if stale:
        raise click.ClickException(
            f"JSON Schemas out of date: {', '.join(stale)}; run `cityvitals schemas --write`"
        )
    click.echo(f"JSON Schemas in {JSON_DIR} match the Arrow schemas")


def _catalog_and_rules(catalog: Path | None, rules: Path | None):
    from indicators.definitions import DEFAULT_CATALOG, load_catalog
    from thresholds.rules import DEFAULT_RULES, load_rules

    cat = load_catalog(catalog or DEFAULT_CATALOG)
    return cat, load_rules(rules or DEFAULT_RULES, catalog=cat)


_CATALOG_OPTION = click.option(
    "--catalog",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Indicator catalogue (default: the packaged indicators/catalog.yaml).",
)
_RULES_OPTION = click.option(
    "--rules",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Threshold rules (default: the packaged thresholds/rules.yaml).",
)

_RATING_OPTION = click.option(
    "--rating",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Five-colour department rating (default: the packaged thresholds/rating.yaml).",
)


@main.command()
@_CATALOG_OPTION
@_RULES_OPTION
@_RATING_OPTION
@click.option(
    "--risk-points",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Risk points and grading models (default: the packaged thresholds/risk_points.yaml).",
)
def check(
    catalog: Path | None, rules: Path | None, rating: Path | None, risk_points: Path | None
) -> None:
    """Load every indicator and rule and the rating; print coverage per sector, or the errors.

    Exits non-zero, naming file, line and key, if anything is wrong: an
    indicator without thresholds, a rule for an unknown indicator,
    inconsistent bounds, a rating of an indicator not keyed by department.
    """
    from thresholds.coverage import coverage
    from thresholds.rating import DEFAULT_RATING, load_rating
    from thresholds.risk_points import DEFAULT_RISK_POINTS, load_risk_points

    cat, ruleset = _catalog_and_rules(catalog, rules)
    five = load_rating(rating or DEFAULT_RATING, catalog=cat)
    risk = load_risk_points(risk_points or DEFAULT_RISK_POINTS, catalog=cat)
    click.echo(f"{'sector':<16}{'indicators':>11}{'with thresholds':>17}{'share':>8}{'rules':>7}")
    for r in coverage(cat, ruleset):
        if r.sector == "total":
            click.echo("-" * 59)
        click.echo(
            f"{r.sector:<16}{r.indicators:>11}{r.with_thresholds:>17}{r.share:>8.0%}{r.rules:>7}"
        )
    kinds = {
        "overrides": sum(len(r.overrides) for r in ruleset.rules),
        "schedules": sum(len(r.schedules) for r in ruleset.rules),
        "rate-of-change rules": sum(r.measure == "change" for r in ruleset.rules),
        "no-data policies": sum(r.no_data is not None for r in ruleset.rules),
    }
    click.echo(", ".join(f"{n} {k}" for k, n in kinds.items()))
    click.echo(f"windows aligned in {cat.timezone} (a day from 00:00 there)")
    click.echo(f"department rating: {five.summary()}")
    click.echo(f"risk points: {len(risk.points)}, grading models: {', '.join(risk.models)}")


@main.command("catalog")
@click.option("--write", is_flag=True, help="Regenerate docs/catalog.md.")
def catalog_cmd(write: bool) -> None:
    """Check (or --write) docs/catalog.md, the catalogue page with every threshold."""
    from thresholds.coverage import CATALOG_PAGE, catalog_page

    page = catalog_page(*_catalog_and_rules(None, None))
    if write:
        CATALOG_PAGE.parent.mkdir(parents=True, exist_ok=True)
        CATALOG_PAGE.write_text(page, encoding="utf-8")
        click.echo(f"wrote {CATALOG_PAGE}")
        return
    current = CATALOG_PAGE.read_text(encoding="utf-8") if CATALOG_PAGE.exists() else None
    if current != page:
        raise click.ClickException(
            f"{CATALOG_PAGE} is out of date; run `cityvitals catalog --write`"
        )
    click.echo(f"{CATALOG_PAGE} matches the catalogue and rules")


#: How old the newest recovery snapshot may be before `cityvitals health` fails, in seconds.
HEALTH_MAX_AGE = 120.0


def _flow_config():
    """The Kafka flow's settings in this environment, read as ``flows.city_kafka`` reads them."""
    from flows.config import load_flow_config

    return load_flow_config(os.environ)


@main.command()
@click.option(
    "--recovery",
    type=click.Path(file_okay=False, path_type=Path),
    help=(
        "Bytewax recovery directory to initialise if it holds no partitions yet "
        "(default: recovery.directory of the settings)."
    ),
)
@click.option(
    "--partitions",
    type=click.IntRange(min=1),
    help="Recovery partitions to create (default: recovery.partitions of the settings, 1).",
)
@click.option(
    "--input-topics",
    type=click.IntRange(min=1),
    metavar="PARTITIONS",
    help="Also create the missing input topics, with this many partitions.",
)
def prepare(recovery: Path | None, partitions: int | None, input_topics: int | None) -> None:
    """Create the Kafka flow's lake, recovery store and input topics; safe to run again.

    Settings come from the environment as for ``python -m bytewax.run
    flows.city_kafka`` (``CITYVITALS_CONFIG``, ``CITYVITALS__...``,
    ``KAFKA_BOOTSTRAP_SERVERS``). Run it once before the processes of a
    cluster start: they then find the lake's views in place instead of racing
    to write them, the recovery store is created exactly once
    (``bytewax.recovery`` fails on a directory that has partitions; this keeps
    them), and the input topics the flow needs exist before it subscribes.
    """
    from indicators.definitions import load_catalog

    config = _flow_config()
    lake = Lake(config.pipeline.out, catalog=load_catalog(config.pipeline.catalog))
    lake.create()
    click.echo(f"lake ready: {lake.db_path}")
    recovery = recovery or config.recovery.directory
    partitions = partitions or config.recovery.partitions
    if recovery is not None:
        existing = sorted(recovery.glob("part-*.sqlite3"))
        if existing:
            click.echo(f"recovery store kept: {recovery} ({len(existing)} partitions)")
        else:
            from bytewax.recovery import init_db_dir

            recovery.mkdir(parents=True, exist_ok=True)
            init_db_dir(recovery, partitions)
            click.echo(f"recovery store created: {recovery} ({partitions} partitions)")
    if input_topics is not None:
        from flows.kafka_io import KafkaIOError, ensure_topics

        topics = list(config.kafka.topics.inputs.values())
        try:
            created = ensure_topics(config.kafka, topics, input_topics)
        except KafkaIOError as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(f"input topics ready: {', '.join(topics)} (created: {len(created)})")


@main.command()
@click.option(
    "--recovery",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="BYTEWAX_RECOVERY_DIRECTORY",
    help="The flow's recovery directory (-r); default $BYTEWAX_RECOVERY_DIRECTORY.",
)
@click.option(
    "--max-age",
    type=click.FloatRange(min=0, min_open=True),
    default=HEALTH_MAX_AGE,
    show_default=True,
    help="Seconds the newest recovery snapshot may be old.",
)
def health(recovery: Path | None, max_age: float) -> None:
    """Exit 0 if the Kafka flow of this environment looks alive (the image's HEALTHCHECK).

    Checks that the lake of the flow's settings has its DuckDB views (the
    flow got through its start) and, with a recovery directory, that its
    newest file changed within --max-age seconds: a running flow writes a
    snapshot there every -s seconds even when no events arrive, so a stopped
    or stalled cluster goes stale. Only stat calls: no DuckDB, no Kafka.
    """
    lake = Lake(_flow_config().pipeline.out)
    problems = []
    if not lake.db_path.exists():
        problems.append(f"no DuckDB views at {lake.db_path} (the flow has not started)")
    if recovery is not None:
        files = list(recovery.glob("part-*.sqlite3*"))
        if not files:
            problems.append(f"no recovery partitions in {recovery}")
        else:
            age = time.time() - max(p.stat().st_mtime for p in files)
            if age > max_age:
                problems.append(
                    f"newest recovery snapshot in {recovery} is {age:.0f} s old "
                    f"(more than {max_age:g} s)"
                )
    if problems:
        raise click.ClickException("unhealthy: " + "; ".join(problems))
    click.echo("healthy")


@main.command()
@click.option(
    "--events",
    default=300_000,
    show_default=True,
    type=click.IntRange(min=1),
    help="Events in the input set.",
)
@click.option("--devices", default=500, show_default=True, help="Devices in the simulated city.")
@click.option("--seed", default=7, show_default=True, help="Random seed of the input.")
@click.option(
    "--batch-size",
    default=50_000,
    show_default=True,
    type=click.IntRange(1, 1_000_000),
    help="Lines per batch fed to the flows.",
)
@click.option(
    "--rate",
    default=100_000.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    callback=_finite_rate,
    help="Steady input rate of the latency run, events/s (halved flow rate if it can't keep up).",
)
@click.option(
    "--tick",
    default=0.1,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds between the latency run's input batches (rate × tick lines each; "
    "what is due when the flow polls comes at once).",
)
@click.option(
    "--bootstrap",
    envvar="KAFKA_BOOTSTRAP_SERVERS",
    default=None,
    help="Kafka bootstrap servers for the Kafka run ($KAFKA_BOOTSTRAP_SERVERS; unset: skipped).",
)
@click.option("--no-naive", is_flag=True, help="Skip the naive baseline (slow at large sizes).")
@click.option(
    "--sizes",
    default=None,
    help="Also run the flow at these event counts and device counts, e.g. "
    "'100000,1000000,10000000:10000,100000,700000'.",
)
@click.option(
    "--lake-rows",
    default=0,
    help="Also time the analysts' views on a synthetic lake of this many indicator rows.",
)
@click.option("--views-only", is_flag=True, help="Only the views part (with --lake-rows).")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write the report here.")
def bench(
    events: int,
    devices: int,
    seed: int,
    batch_size: int,
    rate: float,
    tick: float,
    bootstrap: str | None,
    no_naive: bool,
    sizes: str | None,
    lake_rows: int,
    views_only: bool,
    json_path: Path | None,
) -> None:
    """Benchmark the flow against a naive baseline, Polars and DuckDB batch, and Kafka."""
    from cityvitals.bench import BenchSettings, print_report, run_bench, run_sizes

    if views_only:
        if lake_rows <= 0:
            raise click.BadParameter("--views-only needs --lake-rows N", param_hint="--views-only")
        _bench_views(lake_rows, json_path)
        return

    _scenario(devices, 60, seed)  # --devices and --seed as the simulator takes them
    settings = BenchSettings(
        events=events,
        devices=devices,
        seed=seed,
        batch_size=batch_size,
        rate=rate,
        tick=tick,
        bootstrap=bootstrap or None,
        naive=not no_naive,
    )
    say = lambda m: click.echo(m, err=True)  # noqa: E731
    report = run_bench(settings, say=say)
    if sizes:
        try:
            ev_part, dev_part = sizes.split(":")
            ev_sizes = [int(x) for x in ev_part.split(",") if x]
            dev_sizes = [int(x) for x in dev_part.split(",") if x]
        except ValueError as exc:
            raise click.BadParameter(f"expected 'E1,E2,E3:D1,D2,D3', got {sizes!r}") from exc
        report["sizes"] = run_sizes(ev_sizes, dev_sizes, settings, say=say)
    print_report(report, click.echo)
    if lake_rows > 0:
        report["views"] = _bench_views(lake_rows, None)
    if json_path is not None:
        json_path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
        click.echo(f"wrote {json_path}")


def _bench_views(rows: int, json_path: Path | None) -> dict:
    """The views part of the benchmark: a synthetic lake of ``rows`` indicator rows, timed."""
    import tempfile

    from cityvitals.lakebench import synthetic_lake, time_views

    with tempfile.TemporaryDirectory(prefix="cityvitals-views-") as tmp:
        t0 = time.perf_counter()
        lake = synthetic_lake(tmp, rows)
        click.echo(f"synthetic lake of {rows:,} indicator rows in {time.perf_counter() - t0:.1f} s")
        timings = time_views(lake)
    click.echo(f"{'view or macro':<26}{'first s':>10}{'best of 3 s':>13}{'rows':>10}")
    for name, t in timings.items():
        click.echo(f"{name:<26}{t['first_s']:>10.3f}{t['best_s']:>13.3f}{t['rows']:>10,}")
    report = {"lake_rows": rows, "timings": timings}
    if json_path is not None:
        json_path.write_bytes(orjson.dumps({"views": report}, option=orjson.OPT_INDENT_2) + b"\n")
        click.echo(f"wrote {json_path}")
    return report


@main.command()
@click.option("--lake", default="data", show_default=True, type=click.Path(path_type=Path))
@click.option("--out", default="report", show_default=True, type=click.Path(path_type=Path))
def report(lake: Path, out: Path) -> None:
    """The city overview as PNG plots and a Markdown summary (from the lake's views)."""
    from cityvitals.report import write_report

    if not Lake(lake).db_path.exists():
        raise click.ClickException(f"no lake in {lake}: {Lake(lake).db_path} does not exist")
    click.echo(f"wrote {write_report(Lake(lake), out)}")


@main.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(exists=True, dir_okay=False))
@click.option("--indicator", help="Grade the values with this indicator's rules.")
@click.option("--model", help="Score the values with this model and grade the scores.")
@click.option("--out", type=click.Path(dir_okay=False), help="Per-row output, .csv or .parquet.")
@click.option("--entity-column", help="The column naming each row's entity (default: one series).")
@_CATALOG_OPTION
@_RULES_OPTION
def replay(input_path, indicator, model, out, entity_column, catalog, rules) -> None:
    """Backtest: the live scoring and grading over a recorded series, in event time.

    INPUT is CSV or Parquet with timestamp,value (each row one window value,
    the window ending at timestamp; naive timestamps are UTC).
    """
    from thresholds import replay as rp

    cat, ruleset = _catalog_and_rules(catalog, rules)
    try:
        if out:
            rp.out_format(out)
        series = rp.read_series(input_path, entity_column)
        with (
            click.progressbar(length=series.height, label="replaying", file=sys.stderr)
            if series.height >= rp.LONG_INPUT
            else contextlib.nullcontext() as bar
        ):
            done = [0]

            def progress(n: int) -> None:
                if bar is not None:
                    bar.update(n - done[0])
                done[0] = n

            result = rp.replay(
                series, cat, ruleset, indicator=indicator, model=model, progress=progress
            )
        for line in rp.summary_lines(result):
            click.echo(line)
        if out:
            rp.write_rows(result.rows, out, entity_column)
            click.echo(f"wrote {result.rows.height:,} rows to {out}")
    except rp.ReplayError as exc:
        raise click.ClickException(str(exc)) from None


def run_cli() -> None:
    """Entry point: configuration errors end the start with their message."""
    try:
        main(standalone_mode=True)
    except ConfigError as exc:
        click.echo(f"configuration error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    run_cli()
