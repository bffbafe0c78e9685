"""`otel-ai demo`: a real `otel-ai serve` plus the shop simulator: an hour of history, then a live fault.

serve runs as a child process (its own data directory, like any deployment); the simulator is an
ordinary OTLP client of it. Ctrl-C stops the simulator first, then serve (which commits what it took).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime

import httpx

from otel_ai.auth import client_headers
from otel_ai.commands.serve import add_serve_options, serve_settings
from otel_ai.commands.sim import add_sim_options, print_progress, run_in_thread
from otel_ai.settings import Settings
from sim.check import self_check, stored_counts
from sim.runner import SimulationError
from sim.scenarios import DEFAULT_DEMO_SCENARIO, SCENARIOS

QUESTIONS: dict[str, str] = {
    "paymentSlow": "Why is checkout slow?",
    "paymentFailure": "Why are checkouts failing?",
    "paymentUnreachable": "Why are checkouts failing?",
    "cartFailure": "Why does the cart return errors?",
    "productCatalogFailure": "Why do some product pages fail?",
    "recommendationCacheFailure": "Why are recommendations slow?",
    "adFailure": "Why do ads fail to load?",
    "adHighCpu": "Why are ads slow?",
    "adManualGc": "Why are ads slow?",
    "imageSlowLoad": "Why do product images load slowly?",
    "intlShippingSlowdown": "Why is checkout slow for some users?",
    "kafkaQueueProblems": "Why are orders processed late?",
    "emailMemoryLeak": "Why is order confirmation getting slower?",
    "productCatalogSlowQuery": "Why are product pages slow?",
    "currencyTimeout": "Why is checkout slow and failing?",
    "checkoutBadDeploy": "Why is checkout slow?",
    "nodeCpuSaturation": "Why is checkout slow?",
    "none": "Is anything wrong with the shop right now?",
}


def demo_questions(scenario: str) -> list[str]:
    """Three questions worth asking during the demo of `scenario`."""
    return [
        QUESTIONS.get(scenario, "What is wrong with the shop right now?"),
        "Which services changed the most in the last 15 minutes, and what is the evidence?",
        "Show me an exemplar slow or failing trace and where its time goes.",
    ]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="serve plus the shop simulator: an hour of history, then a live fault")
    add_serve_options(p)
    add_sim_options(p, history="1h")
    p.set_defaults(func=run, scenario=DEFAULT_DEMO_SCENARIO)


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"error: otel-ai serve exited with {proc.returncode} (are the ports free?)")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"error: otel-ai serve did not become healthy at {url} in {timeout:.0f}s")


def _serve_command(args: argparse.Namespace) -> list[str]:
    cmd = [sys.executable, "-m", "otel_ai", "serve"]
    for flag in ("data", "clickhouse_url", "database", "host", "port", "otlp_grpc_port", "otlp_http_port"):
        value = getattr(args, flag, None)
        if value is not None:
            cmd += [f"--{flag.replace('_', '-')}", str(value)]
    return cmd


def run(args: argparse.Namespace) -> int:
    settings = serve_settings(args)
    scenario = args.scenario if args.scenario in SCENARIOS else DEFAULT_DEMO_SCENARIO
    url = f"http://{settings.host}:{settings.port}"
    print(f"[demo] starting otel-ai serve ({url}, OTLP gRPC {settings.host}:{settings.otlp_grpc_port})", flush=True)
    # own session: Ctrl-C reaches the simulator first; serve gets SIGTERM after the last flush
    serve = subprocess.Popen(_serve_command(args), env=os.environ.copy(), start_new_session=True)
    try:
        _wait_healthy(url, serve)
        api = client_headers(settings)
        before = stored_counts(url, headers=api)
        result = run_in_thread(
            threading.Event(), scenario=scenario, endpoint=f"http://{settings.host}:{settings.otlp_grpc_port}",
            protocol="grpc", history=args.history, live=None, seed=args.seed, fault_start=args.fault_start,
            fault_duration=args.fault_duration, rate=args.rate,
            progress=_banner(scenario, settings.public_url or url), headers=_auth(settings),
        )
        print(f"[demo] simulator stopped: sent {result.sent}, failed {result.failed}", flush=True)
        check = self_check(url, before, result.sent, headers=api)
        print(f"[demo] self-check: {'stored == sent' if check['ok'] else 'MISMATCH'} (stored {check['stored']})",
              flush=True)
        print(f"[demo] ground truth: {result.ground_truth.model_dump_json()}", flush=True)
        return 0
    except SimulationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if serve.poll() is None:
            serve.send_signal(signal.SIGTERM)
            try:
                serve.wait(60)
            except subprocess.TimeoutExpired:
                serve.kill()


def _auth(settings: Settings) -> dict[str, str] | None:
    token = settings.ingest_token.get_secret_value() if settings.ingest_token else None
    return {"authorization": f"Bearer {token}"} if token else None


def _banner(scenario: str, chat_url: str) -> Callable[[str, datetime, dict[str, int]], None]:
    """Progress during history; once live, the chat URL and questions to ask."""
    shown = threading.Event()

    def progress(phase: str, at: datetime, sent: dict[str, int]) -> None:
        if phase == "history":
            print_progress(phase, at, sent)
        elif not shown.is_set():
            shown.set()
            questions = "\n".join(f"  {i}. {q}" for i, q in enumerate(demo_questions(scenario), 1))
            print(f"\n[demo] history sent ({', '.join(f'{k} {v}' for k, v in sent.items())}); live fault "
                  f"'{scenario}' is on (since the end of the history): {SCENARIOS[scenario].description}\n"
                  f"[demo] open the chat: {chat_url}\n[demo] give it a minute or two, then ask:\n{questions}\n"
                  f"[demo] Ctrl-C stops the simulator and the server.\n", flush=True)

    return progress
