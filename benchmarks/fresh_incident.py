"""Root cause asked as soon as a fault starts: "What's wrong?" with no time, against the same with the fault's
start time, on every simulator scenario whose fault began `--age` before the question.

A user asks right after an alert, often a minute or two into the fault. Without a time in the question the
analyst must find where the symptom began (agent/incident.py); with it, the window is given. The gap
between the two columns is what finding the start still costs. The real simulator fills a fresh database
through a real in-process IngestService (tests/fixtures/scenario.py), with the fault over the last `--age`
of `--history`; the end is pinned (`--anchor`), so a run is repeatable.

    .venv/bin/python benchmarks/fresh_incident.py [--age 80s] [--history 12m] [--rate 1.5] [--scenarios a,b]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent import ask_sync  # noqa: E402
from sim.scenarios import SCENARIOS  # noqa: E402
from store import Store  # noqa: E402
from tests.fixtures.scenario import load_scenario  # noqa: E402
from tests.test_agent_scenarios import settings_for  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--age", default="80s", help="how long before the question the fault began")
    ap.add_argument("--history", default="12m")
    ap.add_argument("--rate", type=float, default=1.5, help="simulated flows per second")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--anchor", default="2026-12-07T03:00:00+00:00", help="end of the data (ISO, within the TTL)")
    ap.add_argument("--scenarios", default="", help="comma-separated (default: every fault scenario)")
    args = ap.parse_args()
    names = [n for n in args.scenarios.split(",") if n] or sorted(n for n in SCENARIOS if n != "none")
    anchor = datetime.fromisoformat(args.anchor).astimezone(UTC)
    print(f"machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, load average "
          f"{os.getloadavg()[0]:.2f}; fault {args.age} old at the end of {args.history}, {args.rate} flows/s, "
          f"seed {args.seed}")
    root = Store.connect(f"chdb://{tempfile.mkdtemp(prefix='fresh-incident-')}", database="default")
    right = {"plain": 0, "timed": 0}
    for name in names:
        loaded = load_scenario(root, name, args.seed, args.history, rate=args.rate, fault_duration=args.age,
                               anchor=anchor)
        truth = loaded.truth
        assert truth.start is not None, name
        line = [f"{name:28} truth {truth.root_cause_service or '-':16}"]
        timed = f"What's wrong since {truth.start:%H:%M:%S} UTC?"
        for label, question in (("plain", "What's wrong?"), ("timed", timed)):
            t0 = time.process_time()
            answer = ask_sync(question, store=loaded.store, settings=settings_for(loaded))
            cpu = time.process_time() - t0
            top = answer.root_causes[0] if answer.root_causes else None
            hit = top is not None and top.service == truth.root_cause_service
            right[label] += hit
            named = f"{top.service}:{top.confidence:.2f}" if top else "nothing"
            line.append(f"{label} {'right' if hit else 'WRONG'} ({named}, {cpu:.1f} s CPU)")
        print("  ".join(line), flush=True)
    print(f"first root cause right: 'What's wrong?' {right['plain']}/{len(names)}, "
          f"with the fault's start time {right['timed']}/{len(names)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
