"""Benchmark: how fast the Slack app acknowledges and answers, end to end through a real `serve`.

A real `otel-ai serve` (its own process and data directory, Slack HTTP mode on) is filled by the
real simulator (`--scenario paymentSlow --history 20m --live 0`); its Web API calls go to the fake
Slack API of tests/fakes/slack_api.py. Each round posts a correctly signed app_mention (a new
thread) to /slack/events and times, from the moment the POST starts:
- ack: the HTTP 200 (Slack retries after 3 s);
- looking: the "Looking into it…" reply posted in the thread (chat.postMessage);
- answer: that reply updated in place with the answer (chat.update);
- charts: the PNG files attached to the thread (files.completeUploadExternal).
The answer must name the scenario's root-cause service, so a round times a full diagnosis.

    .venv/bin/python benchmarks/slack.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import slack_bolt  # noqa: E402

from tests.fakes.slack_api import FakeSlack  # noqa: E402
from tests.fixtures.server import make_server  # noqa: E402
from tests.fixtures.slack import BOT_TOKEN, mention, message_text, new_ts, post_signed, slack_env  # noqa: E402


def first_call(fake: FakeSlack, method: str, since: int, match: dict[str, str], timeout: float = 300) -> float:
    """Monotonic time at which the first matching call after index `since` was seen (polled every 10 ms)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for call in fake.calls[since:]:
            if call.method == method and all(call.args.get(k) == v for k, v in match.items()):
                return time.monotonic()
        time.sleep(0.01)
    raise SystemExit(f"no {method} with {match} within {timeout}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="otel-ai-bench-slack-"))
    fake = FakeSlack(token=BOT_TOKEN).start()
    (root / "data").mkdir()
    server = make_server(root / "data", root / "serve.log", slack_env(fake))
    try:
        server.start()
        sim = subprocess.run(
            [sys.executable, "-m", "otel_ai", "sim", "--scenario", "paymentSlow", "--endpoint",
             server.otlp_grpc_endpoint, "--history", "20m", "--live", "0", "--seed", "1", "--quiet"],
            capture_output=True, text=True, check=True,
        )
        truth = json.loads(sim.stdout[sim.stdout.index("{"):])["ground_truth"]
        rows = []
        for i in range(args.rounds):
            ts, channel = new_ts(), f"C0BENCH{i}"
            body = mention(f"{truth['symptom']} — why?", channel, "U0BENCH", ts)
            since = len(fake.calls)
            t0 = time.monotonic()
            response = post_signed(server.http_url, body)
            ack = time.monotonic() - t0
            assert response.status_code == 200, response.text
            looking = first_call(fake, "chat.postMessage", since, {"channel": channel}) - t0
            placeholder = next(c.result["ts"] for c in fake.calls[since:]
                               if c.method == "chat.postMessage" and c.args.get("channel") == channel)
            answer = first_call(fake, "chat.update", since, {"channel": channel, "ts": placeholder}) - t0
            update = next(c for c in fake.calls[since:] if c.method == "chat.update" and c.args["ts"] == placeholder)
            assert truth["root_cause_service"] in message_text(update.args), message_text(update.args)[:500]
            charts = first_call(fake, "files.completeUploadExternal", since, {"channel_id": channel}) - t0
            rows.append((ack, looking, answer, charts))
            print(f"round {i + 1}: ack {ack * 1000:.0f} ms, looking {looking * 1000:.0f} ms, "
                  f"answer {answer:.2f} s, charts {charts:.2f} s", flush=True)
    finally:
        server.stop()
        fake.stop()
        shutil.rmtree(root, ignore_errors=True)

    def summary(values: list[float], scale: float, unit: str) -> str:
        return f"median {statistics.median(values) * scale:.{0 if unit == 'ms' else 2}f} {unit}, " \
               f"max {max(values) * scale:.{0 if unit == 'ms' else 2}f} {unit}"

    print()
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, {platform.processor() or ''} "
          f"Python {platform.python_version()}, slack_bolt {slack_bolt.version.__version__}")
    print(f"rounds: {args.rounds} (first round includes kaleido's browser start for the first chart)")
    for name, col, scale, unit in (("HTTP ack", 0, 1000, "ms"), ("'looking…' posted", 1, 1000, "ms"),
                                   ("answer in place", 2, 1, "s"), ("charts uploaded", 3, 1, "s")):
        print(f"{name:>18}: {summary([r[col] for r in rows], scale, unit)}")


if __name__ == "__main__":
    main()
