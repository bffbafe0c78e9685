"""`otel-ai sim`: the shop simulator as an OTLP client of any endpoint (otel-ai or a Collector)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from datetime import datetime, timedelta

from otel_ai.auth import client_headers
from otel_ai.commands.common import iso_time
from otel_ai.settings import load_settings
from sim.check import self_check, stored_counts
from sim.runner import DEFAULT_RATE, SimResult, SimulationError, run_simulation
from sim.scenarios import SCENARIOS
from tools.timewindow import parse_duration


def duration_or_zero(text: str) -> timedelta:
    """A duration ('5m', '1h'), where '0' means none."""
    if text.strip() in ("0", "0s", "0m"):
        return timedelta(0)
    return parse_duration(text)


def fault_start_arg(text: str) -> datetime | timedelta:
    """An ISO time, or an offset from the end of history: '-10m', '+2m'."""
    text = text.strip()
    if text[:1] in "+-":
        delta = parse_duration(text[1:])
        return -delta if text[0] == "-" else delta
    return iso_time(text, "--fault-start", "an ISO time or an offset like -10m")


def _duration_type(text: str) -> timedelta:
    try:
        return duration_or_zero(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_sim_options(p: argparse.ArgumentParser, history: str = "1h") -> None:
    """Options shared by `sim` and `demo`."""
    p.add_argument("--scenario", default=None, choices=list(SCENARIOS), metavar="NAME",
                   help=f"fault scenario: {', '.join(SCENARIOS)}")
    p.add_argument("--history", type=_duration_type, default=_duration_type(history),
                   help=f"backdated history sent as fast as ingest allows (default {history})")
    p.add_argument("--seed", type=int, default=1, help="random seed (same seed, same telemetry)")
    p.add_argument("--rate", type=float, default=DEFAULT_RATE, help="user flows per second (default %(default)s)")
    p.add_argument("--fault-start", type=fault_start_arg, default=None,
                   help="fault start: ISO time or offset from the end of history (-10m)")
    p.add_argument("--fault-duration", type=_duration_type, default=None, help="fault length (e.g. 10m)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sim", help="simulate the Astronomy Shop and send its telemetry over OTLP")
    add_sim_options(p)
    p.add_argument("--endpoint", help="OTLP endpoint (default http://127.0.0.1:4317 for grpc, :4318 for http)")
    p.add_argument("--protocol", choices=["grpc", "http/protobuf"], default="grpc")
    p.add_argument("--live", type=_duration_type, default=None,
                   help="real-time phase after the history (default: until stopped; 0 = exit after history)")
    p.add_argument("--header", action="append", default=[], metavar="KEY=VALUE", help="extra export header")
    p.add_argument("--token", help="bearer token for otel-ai's ingest (default: OTEL_AI_INGEST_TOKEN)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--list", action="store_true", help="list the scenarios and their root causes, then exit")
    p.add_argument("--check", metavar="URL",
                   help="otel-ai HTTP URL (e.g. http://127.0.0.1:8000): check that it stored exactly what was sent")
    p.set_defaults(func=run)


def export_headers(args: argparse.Namespace, token: str | None) -> dict[str, str] | None:
    headers = {}
    for item in args.header:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"error: bad --header {item!r}: use KEY=VALUE")
        headers[key.strip().lower()] = value.strip()
    if token:
        headers.setdefault("authorization", f"Bearer {token}")
    return headers or None


def print_progress(phase: str, at: datetime, sent: dict[str, int]) -> None:
    counts = ", ".join(f"{k} {v}" for k, v in sorted(sent.items()))
    print(f"[sim] {phase}: at {at:%Y-%m-%d %H:%M:%S}Z, sent {counts or 'nothing yet'}", file=sys.stderr, flush=True)


def run_in_thread(stop: threading.Event, **kwargs: object) -> SimResult:
    """Run the simulator in a worker thread; Ctrl-C or SIGTERM stops it cleanly (flushes, then reports)."""
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["result"] = run_simulation(stop=stop, **kwargs)  # type: ignore[arg-type]
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    def on_signal(signum: int, frame: object) -> None:
        if not stop.is_set():
            print("[sim] stopping: flushing what was generated", file=sys.stderr, flush=True)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    worker = threading.Thread(target=target, name="otel-ai-sim")
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.5)
    finally:
        stop.set()
        worker.join()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["result"]  # type: ignore[return-value]


def list_scenarios() -> int:
    for sc in SCENARIOS.values():
        cause = f"{sc.root_cause_service} {sc.root_cause_operation or ''}".strip() if sc.root_cause_service else "-"
        print(f"{sc.name:28} {sc.kind or '-':11} {cause:60} {sc.symptom or sc.description}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.list:
        return list_scenarios()
    settings = load_settings()
    scenario = args.scenario or "none"
    if args.endpoint:
        endpoint = args.endpoint
    elif args.protocol == "grpc":
        endpoint = f"http://127.0.0.1:{settings.otlp_grpc_port}"
    else:
        endpoint = f"http://127.0.0.1:{settings.otlp_http_port}"
    token = args.token or (settings.ingest_token.get_secret_value() if settings.ingest_token else None)
    if not args.quiet:
        print(f"[sim] scenario {scenario} -> {endpoint} ({args.protocol}), history {args.history}, live "
              f"{'until stopped' if args.live is None else args.live}", file=sys.stderr, flush=True)
    api = client_headers(settings)
    before = stored_counts(args.check, headers=api) if args.check else None
    try:
        result = run_in_thread(
            threading.Event(), scenario=scenario, endpoint=endpoint, protocol=args.protocol, history=args.history,
            live=args.live, seed=args.seed, fault_start=args.fault_start, fault_duration=args.fault_duration,
            headers=export_headers(args, token), rate=args.rate, progress=None if args.quiet else print_progress,
        )
    except SimulationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"[sim] done in {result.seconds:.1f}s: {result.traces} traces; sent {result.sent}; "
              f"failed {result.failed}", file=sys.stderr, flush=True)
    report = {"ground_truth": result.ground_truth.model_dump(mode="json"), "sent": result.sent,
              "failed": result.failed, "start": result.start.isoformat(), "end": result.end.isoformat()}
    checked_ok = True
    if before is not None:
        check = self_check(args.check, before, result.sent, headers=api)
        report["self_check"] = check
        checked_ok = check["ok"]
        print(f"[sim] self-check: {'stored == sent' if checked_ok else 'MISMATCH'} (sent {check['sent']}, "
              f"stored {check['stored']})", file=sys.stderr, flush=True)
    print(json.dumps(report, indent=2))
    return 1 if any(result.failed.values()) or not checked_ok else 0
