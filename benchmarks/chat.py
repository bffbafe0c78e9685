"""Benchmark: what a chat user waits for — the first tool step, the first answer text and the whole
answer of `ask(..., on_event=...)` (the path the chat streams), and planning + running a dashboard.

Spans come from benchmarks/agent.py's generator (traces frontend -> checkout -> payment/cart, payment's
Charge slowed in the last 10 minutes), `--spans` of them (default 1 million) over `--hours` ending now.
The built-in analyst and the built-in dashboard planner run in-process on the embedded store.

    .venv/bin/python benchmarks/chat.py [--spans 1000000] [--hours 6] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent import ask  # noqa: E402
from agent.streaming import AnswerDelta, ToolFinished, ToolStarted  # noqa: E402
from benchmarks.agent import QUESTION, generate  # noqa: E402
from chat.dashboards import build_dashboard, run_dashboard  # noqa: E402
from otel_ai.settings import Settings  # noqa: E402
from store import Store  # noqa: E402
from store.migrations import migrate  # noqa: E402

DATABASE = "bench_chat"


async def streamed_ask(store: Store, settings: Settings) -> dict[str, float]:
    """Seconds from the call to the first tool start, first tool end, first answer text and the return."""
    marks: dict[str, float] = {}
    t0 = time.perf_counter()

    async def on_event(event: object) -> None:
        key = {ToolStarted: "first tool step", ToolFinished: "first tool result", AnswerDelta: "first answer text"}
        name = key.get(type(event))
        if name and name not in marks:
            marks[name] = time.perf_counter() - t0
        if isinstance(event, AnswerDelta):
            marks["answer chunks"] = marks.get("answer chunks", 0) + 1

    answer = await ask(QUESTION, store=store, settings=settings, on_event=on_event)
    marks["whole answer"] = time.perf_counter() - t0
    marks["tool calls"] = float(sum(1 for e in answer.evidence if e.tool != "run_sql" or e.args.get("sql")))
    if not answer.root_causes or answer.root_causes[0].service != "payment":
        raise SystemExit("ERROR: the analyst did not name payment")
    return marks


async def dashboard(store: Store, settings: Settings) -> dict[str, float]:
    t0 = time.perf_counter()
    board, planned = await build_dashboard(store, "checkout", settings)
    planned_s = time.perf_counter() - t0
    _, results = await asyncio.to_thread(run_dashboard, store, board)
    if not all(r.result.ok for r in results):
        raise SystemExit("ERROR: a dashboard panel failed")
    return {"plan (builtin)": planned_s, "plan + run all panels": time.perf_counter() - t0,
            "panels": float(len(results))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans", type=int, default=1_000_000)
    parser.add_argument("--hours", type=float, default=6.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    data = Path(tempfile.mkdtemp(prefix="otel-ai-bench-chat-"))
    settings = Settings(clickhouse_url=f"chdb://{data}", database=DATABASE, model="builtin", openai_api_key=None)
    store = Store.from_settings(settings)
    try:
        migrate(store, settings)
        gen_s = generate(store, args.spans, dt.datetime.now(dt.UTC).replace(microsecond=0), args.hours)
        print(f"machine: {platform.machine()} {os.cpu_count()} cpus, load {os.getloadavg()[0]:.2f}, "
              f"python {platform.python_version()}")
        print(f"stored {args.spans:,} spans over {args.hours:g} h in {gen_s:.1f} s (not timed below)")
        for title, run in (("streamed ask (built-in analyst)", streamed_ask), ("dashboard for checkout", dashboard)):
            runs = [asyncio.run(run(store, settings)) for _ in range(args.repeat + 1)][1:]  # first run warms up
            print(f"\n{title}: median of {args.repeat} warm runs (load {os.getloadavg()[0]:.2f})")
            for key in runs[0]:
                values = [r.get(key, 0.0) for r in runs]
                unit = "" if key in ("tool calls", "answer chunks", "panels") else " s"
                print(f"  {key:24s} {statistics.median(values):8.3f}{unit}")
        return 0
    finally:
        store.close()
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
