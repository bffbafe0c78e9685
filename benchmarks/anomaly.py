"""Anomaly detection quality and cost: autoencoder vs robust baseline on the simulator's scenarios.

Quality (per scenario and seed): the real simulator fills a fresh database through a real in-process
IngestService over OTLP/gRPC (tests/fixtures/scenario.py). The detectors train on the history before
the fault, leaving `--eval-normal` minutes of fault-free windows before it, then score the evaluation
range (normal minutes + the fault) window by window.
- window-level precision / recall / F1: a window is predicted positive when the detector flags any
  entity of the ground truth's affected services; a window is positive when it overlaps the fault;
- detection delay: windows from fault start to the first flagged window (affected services);
- root cause top-1 / top-3: `anomaly.rootcause.rank_root_causes` over the fault window, from that
  detector's anomalies alone, against the ground truth's root-cause service;
- fault-free runs (scenario "none"): false alarms per entity per simulated day = flagged
  (entity, window) pairs / entity-windows scored x 2880; also walk-forward, as `serve` raises them in its
  first hours: trained once on the first hour, every later window scored in order (hours of independent
  normal windows, where the evaluation range is the same 10 minutes for every scenario of a seed).
Cost: scoring one window of 1,000 entities and training on 24 h of 30 s windows x 200 entities
(generated feature tables: anomaly/synthetic.py), on this CPU with torch limited to one thread.

Usage: .venv/bin/python benchmarks/anomaly.py [--scenarios all|a,b] [--seeds 1,2,3] [--history 3h]
       [--eval-normal 10] [--rate 3] [--cost-only | --skip-cost] [--json out.json]
       [--keep DIR [--prepare-only | --loaded-only] [--anchor ISO]] [--report a.json,b.json]
Loading a run (simulating hours of a shop and ingesting it over OTLP) costs far more than scoring it and
does not depend on the detectors: `--keep DIR --prepare-only` loads runs into a persistent chDB directory
(one process per directory, so several can load in parallel), later runs score them again in seconds.

Shared history (always; `--keep` makes the loaded runs persist): the simulator is seeded only by the seed
(arrivals and per-request random streams) and a fault changes nothing before it starts, so for one seed,
anchor and history length every scenario produces the same telemetry before the fault. The seed's history up
to the evaluation range (fault start - --eval-normal) is therefore loaded once, from the fault-free run, into
a base database; each scenario's database gets a copy of it (INSERT ... SELECT inside chDB) and the simulator
then runs the whole scenario again but sends only the items stamped from the cut-off on
(`sim.split.time_range`) through the real OTLP receiver. Verified on 2026-11-28: (1) with the SDK's in-memory
exporters, every span, log record and metric point (ids, times, attributes, resources, values) stamped before
fault start is identical between `none` and each of the 17 scenarios (seed 1, 30 min) and for
checkoutBadDeploy, nodeCpuSaturation, kafkaQueueProblems and adFailure with seeds 2 and 3 (20 min); the only
difference before fault start is nodeCpuSaturation seed 2 in the last minute before it (a trace started before
the fault whose later spans are slowed), far after the cut-off; (2) in chDB, a scenario loaded this way and
the same scenario loaded whole over OTLP have identical tables (row counts and sum of row hashes of every
telemetry table, including the materialized view's; paymentFailure and nodeCpuSaturation, 30 min).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from anomaly.rootcause import rank_root_causes  # noqa: E402
from anomaly.scorer import AnomalyConfig, Scorer, write_records  # noqa: E402
from anomaly.synthetic import generate  # noqa: E402
from ingest.service import IngestThread  # noqa: E402
from otel_ai.context import ServerContext  # noqa: E402
from otel_ai.settings import Settings  # noqa: E402
from sim.emit import otlp_exporters  # noqa: E402
from sim.runner import DEFAULT_RATE, SimResult, fault_window, run_simulation  # noqa: E402
from sim.scenarios import SCENARIOS, Fail, GroundTruth, Slow, get_scenario  # noqa: E402
from sim.split import time_range  # noqa: E402
from store import Store  # noqa: E402
from store.migrations import migrate  # noqa: E402
from tests.fixtures.scenario import load_scenario  # noqa: E402
from tools.sql import literal  # noqa: E402
from tools.timewindow import parse_duration  # noqa: E402

W = 30


def machine() -> str:
    load = os.getloadavg()
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load {load[0]:.1f}/"
            f"{load[1]:.1f}, torch {torch.__version__} threads={torch.get_num_threads()}, Python "
            f"{platform.python_version()}")


def _db_name(scenario: str, seed: int, history: str, rate: float) -> str:
    return f"bench_{scenario}_{seed}_{history}_{rate}".replace(".", "_").replace("-", "_").lower()


TELEMETRY_TABLES_SQL = """SELECT name, engine, create_table_query FROM system.tables
WHERE database = currentDatabase() AND name LIKE 'otel\\_%' AND name NOT LIKE 'otel\\_ai\\_%' ORDER BY name"""


def telemetry_tables(store: Store) -> list[str]:
    """The tables ingest writes (not those a materialized view fills from them: copying the sources refills
    those)."""
    rows = store.query(TELEMETRY_TABLES_SQL).rows
    targets = {m.group(1).split(".")[-1].strip("`") for _, engine, sql in rows if engine == "MaterializedView"
               for m in [re.search(r"\bTO\s+([\w.`]+)", sql)] if m}
    return [name for name, engine, _ in rows if "View" not in engine and name not in targets]


def _ingest(store: Store, scenario: str, seed: int, history: timedelta, rate: float, anchor: datetime,
            start_ns: int | None = None, end_ns: int | None = None) -> SimResult:
    """Simulate the whole run; send only the items stamped in [start_ns, end_ns) through a real in-process
    IngestService over OTLP/gRPC into `store`'s database."""
    settings = Settings(clickhouse_url=f"chdb://{store.url.path}", database=store.database, host="127.0.0.1",
                        otlp_grpc_port=0, otlp_http_port=0)
    with IngestThread(ServerContext(settings=settings, store=store)) as ingest:
        exporters = otlp_exporters(ingest.grpc_endpoint, "grpc")
        try:
            result = run_simulation(scenario, history=history, live=timedelta(0), seed=seed, rate=rate,
                                    anchor=anchor, exporters=time_range(exporters, start_ns, end_ns))
        finally:
            exporters.shutdown()
    if any(result.failed.values()):
        raise RuntimeError(f"{scenario} seed {seed}: the receiver did not take everything: {result.failed}")
    return result


def _fresh_database(root: Store, name: str) -> Store:
    root.command(f"DROP DATABASE IF EXISTS {name}")  # a half-loaded run from an interrupted benchmark
    store = root.with_database(name)
    migrate(store, Settings(clickhouse_url=f"chdb://{root.url.path}", database=name))
    return store


def shared_history(root: Store, seed: int, history: str, rate: float, eval_normal: int, keep: Path,
                   anchor: datetime | None = None) -> tuple[Store, datetime, datetime]:
    """The seed's fault-free history before the evaluation range, loaded once: (database, anchor, cut-off).

    The anchor (end of history) is fixed when the history is first loaded, so every scenario of the seed
    simulates exactly the same prefix (verified: see the module docstring)."""
    name = _db_name("base", seed, f"{history}_{eval_normal}", rate)
    marker = keep / f"{name}.json"
    if marker.exists():
        info = json.loads(marker.read_text())
        return (root.with_database(name), datetime.fromisoformat(info["anchor"]),
                datetime.fromisoformat(info["cutoff"]))
    anchor = anchor or datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    span = parse_duration(history)
    fault_start, _ = fault_window(anchor, span, timedelta(0), None, None)
    cutoff = fault_start - timedelta(minutes=eval_normal)
    store = _fresh_database(root, name)
    t0 = time.monotonic()
    result = _ingest(store, "none", seed, span, rate, anchor, end_ns=int(cutoff.timestamp()) * 10**9)
    marker.write_text(json.dumps({"anchor": anchor.isoformat(), "cutoff": cutoff.isoformat(),
                                  "load_s": round(time.monotonic() - t0, 1), "simulated": result.sent}))
    return store, anchor, cutoff


def load(root: Store, scenario: str, seed: int, history: str, rate: float, keep: Path | None,
         eval_normal: int = 10, anchor: datetime | None = None) -> tuple[Store, GroundTruth]:
    """The scenario's database and ground truth. With `keep` (a persistent data directory) a run loaded once
    is reused (simulation and ingest cost far more than scoring), and the seed's history before the
    evaluation range is loaded once and copied into each scenario's database; only the rest of the run
    (the evaluation range) goes through OTLP for each scenario."""
    if keep is None:
        loaded = load_scenario(root, scenario, seed=seed, history=history, rate=rate)
        return loaded.store, loaded.truth
    name = _db_name(scenario, seed, history, rate)
    marker = keep / f"{name}.truth.json"
    if marker.exists():
        return root.with_database(name), GroundTruth.model_validate_json(marker.read_text())
    base, anchor, cutoff = shared_history(root, seed, history, rate, eval_normal, keep, anchor)
    store = _fresh_database(root, name)
    for table in telemetry_tables(base):
        store.command(f"INSERT INTO {name}.{table} SELECT * FROM {base.database}.{table}")
    result = _ingest(store, scenario, seed, parse_duration(history), rate, anchor,
                     start_ns=int(cutoff.timestamp()) * 10**9)
    marker.write_text(result.ground_truth.model_dump_json())
    return store, result.ground_truth


def faulty_windows(store: Store, scenario: str, truth: GroundTruth, fs: float, fe: float) -> tuple[int | None, int]:
    """(windows from the fault's first window to the first one holding a request the fault changed, None if
    none does; how many fault windows hold one). Only faults that change some requests (a share, or one
    kind) can leave windows untouched: a failing request shows as a span with the fault's error message, a
    slowed one as a span of the slowed service carrying the ground truth's evidence attributes. A fault on
    every request or on a resource changes every window: (0, all)."""
    effects = get_scenario(scenario).effects
    partial = [e for e in effects if isinstance(e, Fail | Slow) and (e.prob < 1.0 or e.when is not None)]
    all_windows = int(np.ceil((fe - (fs // W) * W) / W))
    if not effects or len(partial) < len(effects):
        return 0, all_windows
    conds = []
    for e in partial:
        if isinstance(e, Fail):
            conds.append(f"(StatusCode = 'Error' AND StatusMessage = {literal(e.message)})")
        elif truth.evidence_attributes:
            conds.append(f"(ServiceName = {literal(e.service)} AND " + " AND ".join(
                f"SpanAttributes[{literal(k)}] = {literal(v)}" for k, v in truth.evidence_attributes.items()) + ")")
    if not conds:
        return 0, all_windows
    first, n = store.query(f"""SELECT min(toUnixTimestamp64Milli(Timestamp)) / 1000,
        uniqExact(intDiv(toUnixTimestamp(Timestamp), {W})) FROM otel_traces
        WHERE Timestamp >= fromUnixTimestamp64Milli({int(fs * 1000)})
          AND Timestamp < fromUnixTimestamp64Milli({int(fe * 1000)}) AND ({' OR '.join(conds)})""").rows[0]
    return (int((float(first) - (fs // W) * W) // W) if int(n) else None), int(n)


DETECTORS = ("autoencoder", "baseline")
WALK_TRAIN_MINUTES = 60  # serve trains once an hour of history exists (AnomalyConfig.train_min_windows)


def score_with(scorer: Scorer, model: object, detector: str, table: object) -> tuple[list, float]:
    """Score `table` window by window with one detector from a fresh state: (records, seconds)."""
    scorer.model = model if detector == "autoencoder" else None  # type: ignore[assignment]
    scorer.drift = type(scorer.drift)(scorer.config.drift_sustain_windows, scorer.config.drift_confirm_windows)
    scorer.last_anomalous = {}
    t = time.monotonic()
    records = scorer.score_table(table)  # type: ignore[arg-type]
    return records, time.monotonic() - t


def walk_forward(store: Store, first: float, last: float) -> dict:
    """False alarms as `serve` raises them over a fault-free run: trained once on its first hour, then every
    later window scored in order. Unlike the evaluation range (the same minutes for every scenario of a
    seed), these are hours of independent normal windows per seed."""
    train_end = math.ceil(first / W) * W + WALK_TRAIN_MINUTES * 60
    scorer = Scorer(store, W, AnomalyConfig(train_min_windows=40))
    info = scorer.fit(first, train_end, persist=False)
    table = scorer.with_silent_entities(scorer.features(train_end, (last // W) * W))
    out: dict = {"train_windows": info["windows"], "entity_windows": len(table),
                 "windows": int(len(table.windows()))}
    model = scorer.model
    for detector in DETECTORS:
        records, _ = score_with(scorer, model, detector, table)
        out[detector] = {"flags": len(records), "per_entity_day": round(len(records) / max(len(table), 1) * 2880, 3),
                         "flags_list": [f"{r.window_start:%H:%M:%S} {r.service}/{r.operation} {r.score:.2f} "
                                        f"{r.explanation[:90]}" for r in records][:20]}
    scorer.model = model
    return out


def evaluate(root: Store, scenario: str, seed: int, history: str, eval_normal: int, rate: float,
             keep: Path | None = None, anchor: datetime | None = None) -> dict:
    t0 = time.monotonic()
    store, truth = load(root, scenario, seed, history, rate, keep, eval_normal, anchor)
    load_s = time.monotonic() - t0
    first = float(store.query("SELECT toUnixTimestamp64Milli(min(Timestamp)) / 1000 FROM otel_traces").scalar())
    last = float(store.query("SELECT toUnixTimestamp64Milli(max(Timestamp)) / 1000 FROM otel_traces").scalar())
    if truth.start is None or truth.end is None:  # fault-free: score the same span a fault would cover
        fs = fe = (last // W) * W - 600
    else:
        fs, fe = truth.start.timestamp(), truth.end.timestamp()
    eval_start = (fs // W) * W - eval_normal * 60
    eval_end = (fe // W) * W if truth.end is not None else (last // W) * W
    affected = set(truth.affected_services or ([truth.root_cause_service] if truth.root_cause_service else []))
    out: dict = {"scenario": scenario, "seed": seed, "load_s": round(load_s, 1), "truth": truth.root_cause_service,
                 "kind": truth.kind}
    if scenario != "none":
        out["first_faulty_window"], out["faulty_windows"] = faulty_windows(store, scenario, truth, fs, fe)
    scorer = Scorer(store, W, AnomalyConfig(train_min_windows=40))
    t1 = time.monotonic()
    info = scorer.fit(first, eval_start, persist=False)
    out["train_s"] = round(time.monotonic() - t1, 2)
    out["train_windows"] = info["windows"]
    table = scorer.with_silent_entities(scorer.features(eval_start, eval_end))
    windows = np.arange(eval_start, eval_end, W)
    model = scorer.model
    for detector in DETECTORS:
        store.command("TRUNCATE TABLE anomalies")
        records, score_s = score_with(scorer, model, detector, table)
        write_records(store, records)
        flagged_any = {r.window_start.timestamp() for r in records}
        flagged_aff = {r.window_start.timestamp() for r in records if r.service in affected}
        pos = (windows + W > fs) & (windows < fe) if scenario != "none" else np.zeros(len(windows), dtype=bool)
        pred = np.array([w in flagged_aff for w in windows])
        tp, fp, fn = int((pos & pred).sum()), int((~pos & pred).sum()), int((pos & ~pred).sum())
        res: dict = {"tp": tp, "fp": fp, "fn": fn, "score_s": round(score_s, 3),
                     "windows_any_flag_outside_fault": int(sum(1 for w in flagged_any
                                                              if not (w + W > fs and w < fe)))}
        entity_windows = len(table)
        res["entity_window_flags_outside_fault"] = sum(
            1 for r in records if not (r.window_start.timestamp() + W > fs and r.window_start.timestamp() < fe))
        normal_entity_windows = int(sum(1 for w in table.window if not (w + W > fs and w < fe)))
        res["false_alarms_per_entity_day"] = round(
            res["entity_window_flags_outside_fault"] / max(normal_entity_windows, 1) * 2880, 3)
        res["entity_windows"] = entity_windows
        if scenario != "none":
            hits = sorted(w for w in flagged_aff if w + W > fs and w < fe)
            res["delay_windows"] = int((hits[0] - (fs // W) * W) // W) if hits else None
            first_faulty = out["first_faulty_window"]
            res["delay_from_first_faulty_window"] = (
                None if res["delay_windows"] is None or first_faulty is None else res["delay_windows"] - first_faulty)
            causes = rank_root_causes(store, fs, fe)
            names = [c.service for c in causes]
            res["rc_top"] = names[:3]
            res["rc_reasons"] = [f"{c.service} {c.score:.2f} {c.kind}: {c.reason[:300]}" for c in causes[:3]]
            res["rc_top1"] = bool(names[:1] == [truth.root_cause_service])
            res["rc_top3"] = truth.root_cause_service in names[:3]
        res["false_flags"] = [f"{r.window_start:%H:%M:%S} {r.service}/{r.operation} {r.score:.2f} {r.explanation[:90]}"
                              for r in records if not (r.window_start.timestamp() + W > fs
                                                       and r.window_start.timestamp() < fe)][:5]
        out[detector] = res
    scorer.model = model
    if scenario == "none":
        out["walk_forward"] = walk_forward(store, first, last)
    return out


def summarise(results: list[dict]) -> dict:
    summary: dict = {}
    walks = [r["walk_forward"] for r in results if r.get("walk_forward", {}).get("entity_windows")]
    for detector in DETECTORS:
        faulty = [r[detector] for r in results if r["scenario"] != "none"]
        clean = [r[detector] for r in results if r["scenario"] == "none"]
        tp, fp, fn = (sum(x[k] for x in faulty) for k in ("tp", "fp", "fn"))
        p = tp / (tp + fp) if tp + fp else 0.0
        rcl = tp / (tp + fn) if tp + fn else 0.0
        delays = [x["delay_windows"] for x in faulty if x.get("delay_windows") is not None]
        summary[detector] = {
            "runs": len(faulty), "precision": round(p, 3), "recall": round(rcl, 3),
            "f1": round(2 * p * rcl / (p + rcl), 3) if p + rcl else 0.0,
            "detected_runs": len(delays),
            "detected_within_2_windows": sum(1 for d in delays if d <= 2),
            # extra, beside the metric: the delay counted from the first window holding a faulty request
            "detected_within_2_windows_of_first_faulty": sum(
                1 for x in faulty if x.get("delay_from_first_faulty_window") is not None
                and x["delay_from_first_faulty_window"] <= 2),
            "median_delay_windows": float(np.median(delays)) if delays else None,
            "max_delay_windows": max(delays) if delays else None,
            "rc_top1": round(np.mean([x["rc_top1"] for x in faulty]), 3) if faulty else None,
            "rc_top3": round(np.mean([x["rc_top3"] for x in faulty]), 3) if faulty else None,
            "false_alarms_per_entity_day_all_normal_windows": round(
                sum(x["entity_window_flags_outside_fault"] for x in faulty + clean)
                / max(sum(x["entity_windows"] for x in faulty + clean), 1) * 2880, 3),
            "false_alarms_per_entity_day_fault_free": round(
                np.mean([x["false_alarms_per_entity_day"] for x in clean]), 3) if clean else None,
            "false_alarms_per_entity_day_walk_forward": round(
                sum(w[detector]["flags"] for w in walks) / sum(w["entity_windows"] for w in walks) * 2880, 3
            ) if walks else None,
            "walk_forward_entity_windows": sum(w["entity_windows"] for w in walks),
        }
    return summary


def markdown(results: list[dict]) -> str:
    """Per-scenario rows (summed over seeds) and the overall summary, as markdown tables."""
    lines = ["| scenario | seeds | first faulty window (fault windows holding one) | AE P / R / F1 | AE delay "
             "(windows; from first faulty) | AE root cause top-1 / top-3 | baseline P / R / F1 | baseline delay "
             "(windows; from first faulty) | baseline top-1 / top-3 |",
             "| --- | ---: | --- | --- | --- | --- | --- | --- | --- |"]
    for name in dict.fromkeys(r["scenario"] for r in results):
        runs = [r for r in results if r["scenario"] == name]
        cells = [name, str(len(runs)), ", ".join(
            f"{'-' if r.get('first_faulty_window') is None else r['first_faulty_window']} ({r.get('faulty_windows')})"
            for r in runs) if name != "none" else ""]
        for det in DETECTORS:
            s = summarise(runs)[det]
            if name == "none":
                cells += [f"false alarms/entity-day {s['false_alarms_per_entity_day_fault_free']}", "", ""]
                continue
            delays = [(r[det].get("delay_windows"), r[det].get("delay_from_first_faulty_window")) for r in runs]
            cells += [f"{s['precision']:.2f} / {s['recall']:.2f} / {s['f1']:.2f}",
                      ", ".join("-" if d is None else str(d) if d == f else f"{d} ({f})" for d, f in delays),
                      f"{sum(r[det]['rc_top1'] for r in runs)}/{len(runs)} / {sum(r[det]['rc_top3'] for r in runs)}/"
                      f"{len(runs)} ({', '.join(r[det]['rc_top'][0] if r[det]['rc_top'] else '-' for r in runs)})"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cost() -> dict:
    torch.set_num_threads(1)
    out: dict = {}
    big = generate(1000, 121, seed=1)
    hist = big.select(big.window < big.window.max())
    last = big.select(big.window == big.window.max())
    sc = Scorer(None, W, AnomalyConfig(train_min_windows=100, epochs=2))
    sc.fit_table(hist)
    for _ in range(2):
        t, c = time.perf_counter(), time.process_time()
        sc.score_table(last)
        out["score_1000_entities_one_window_s"] = round(time.perf_counter() - t, 3)
        out["score_1000_entities_one_window_cpu_s"] = round(time.process_time() - c, 3)
    day = generate(200, 2880, seed=2)
    t, c = time.perf_counter(), time.process_time()
    sc2 = Scorer(None, W, AnomalyConfig(train_min_windows=100))
    info = sc2.fit_table(day)
    out["train_200_entities_24h_s"] = round(time.perf_counter() - t, 2)
    out["train_200_entities_24h_cpu_s"] = round(time.process_time() - c, 2)
    out["train_rows"] = info["rows"]
    out["train_epochs"] = info.get("model_epochs")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenarios", default="all")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--history", default="3h")
    ap.add_argument("--eval-normal", type=int, default=10, help="fault-free minutes scored before the fault")
    ap.add_argument("--rate", type=float, default=DEFAULT_RATE, help="simulated user flows per second")
    ap.add_argument("--cost-only", action="store_true")
    ap.add_argument("--skip-cost", action="store_true")
    ap.add_argument("--keep", help="persistent data directory: load each scenario run once, reuse it later")
    ap.add_argument("--prepare-only", action="store_true", help="with --keep: load the runs, score nothing")
    ap.add_argument("--loaded-only", action="store_true", help="with --keep: score only the runs already loaded")
    ap.add_argument("--anchor", help="with --keep: end of the simulated history (ISO time, within the tables' "
                                     "TTL) for seeds loaded from now on; default: the current hour")
    ap.add_argument("--json", help="write all figures to this file")
    ap.add_argument("--report", help="print the summary and markdown tables of (partial) --json files "
                                     "(comma-separated, e.g. one per seed), run nothing")
    args = ap.parse_args()
    if args.report:
        loaded = [r for f in args.report.split(",") for r in json.loads(Path(f).read_text())["runs"]]
        runs = list({(r["scenario"], r["seed"]): r for r in reversed(loaded)}.values())  # first file wins
        order = list(SCENARIOS)
        runs.sort(key=lambda r: (order.index(r["scenario"]) if r["scenario"] in order else len(order), r["seed"]))
        print(json.dumps(summarise(runs), indent=1))
        print(markdown(runs))
        return 0
    print(f"machine: {machine()}", flush=True)
    report: dict = {"machine": machine(), "args": vars(args)}
    if not args.skip_cost and not args.prepare_only:
        report["cost"] = cost()
        print("cost:", json.dumps(report["cost"]), flush=True)
    if not args.cost_only:
        names = list(SCENARIOS) if args.scenarios == "all" else args.scenarios.split(",")
        seeds = [int(s) for s in args.seeds.split(",")]
        results = []
        # chDB may still write to its directory after close: cleanup errors are not benchmark errors
        anchor = datetime.fromisoformat(args.anchor).astimezone(UTC) if args.anchor else None
        with tempfile.TemporaryDirectory(prefix="otel-ai-bench-", ignore_cleanup_errors=True) as tmp:
            keep = Path(args.keep or tmp).resolve()  # a temporary one still shares each seed's history
            keep.mkdir(parents=True, exist_ok=True)
            root = Store.connect(f"chdb://{keep}", database="default")
            for seed in seeds:  # every scenario once before the next seed: a cut-short run still covers all
                for name in names:
                    if args.loaded_only and not (
                            keep / f"{_db_name(name, seed, args.history, args.rate)}.truth.json").exists():
                        continue
                    if args.prepare_only:
                        t0 = time.monotonic()
                        load(root, name, seed, args.history, args.rate, keep, args.eval_normal, anchor)
                        print(f"loaded {name} seed {seed} in {time.monotonic() - t0:.0f} s ({machine()})", flush=True)
                        continue
                    r = evaluate(root, name, seed, args.history, args.eval_normal, args.rate, keep, anchor)
                    r["machine"] = machine()
                    results.append(r)
                    print(json.dumps(r), flush=True)
                    if args.json:
                        Path(args.json).write_text(json.dumps({**report, "runs": results}, indent=1))
            root.close()
        report["runs"] = results
        report["summary"] = summarise(results)
        print("summary:", json.dumps(report["summary"], indent=1), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
