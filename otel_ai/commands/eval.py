"""`otel-ai eval [SUITE ...]`: measure answer quality per model; `otel-ai eval export-feedback`."""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from otel_ai.commands.common import add_data_option, iso_time, settings_from_args
from otel_ai.commands.remote import ensure_free, open_store


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="run eval suites (rca, analytics, safety, conversation) against one or more models",
        description="Run eval suites against models and score the answers. "
                    "`otel-ai eval export-feedback [--out FILE]` turns chat feedback into a suite file.",
    )
    p.add_argument("suites", nargs="*", metavar="SUITE",
                   help="suite names or YAML paths (default: all); or 'export-feedback'")
    p.add_argument("--model", action="append", dest="models", metavar="M",
                   help="model spec (builtin, ollama:<m>, openai:<m>, anthropic:<m>); repeat to compare")
    p.add_argument("--min-score", type=float, help="fail when any metric is below this (0..1) instead of the targets")
    p.add_argument("--judge", metavar="M",
                   help="also grade every case with this LLM (ollama:<m>, openai:<m>, anthropic:<m>); "
                        "default: OTEL_AI_EVAL_JUDGE, off when unset")
    p.add_argument("--report", type=Path, help="write eval-report.json and eval-report.md into this directory")
    p.add_argument("--quick", action="store_true", help="one seed per scenario (the CI subset)")
    p.add_argument("--case", help="only cases whose name contains this text")
    p.add_argument("--rate", type=float, help="simulated user flows per second (default: the simulator's)")
    p.add_argument("--anchor", type=lambda text: iso_time(text, "--anchor"),
                   help="end every scenario's simulated history at this ISO time (UTC unless it names a zone), "
                        "to load the data of an earlier run again (its report gives each failed case's "
                        "'data ending'); default: when each case loads")
    p.add_argument("--out", type=Path, help="export-feedback: file to write (default: stdout)")
    p.add_argument("--live", action="store_true",
                   help="run cases without a scenario (exported feedback) on the store of --data/--clickhouse-url")
    add_data_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.suites[:1] == ["export-feedback"]:
        return export_feedback(args)
    from evals.judge import make_judge
    from evals.report import print_table, write_reports
    from evals.runner import SUITES, new_run, run_suites
    from store import StoreError

    settings = settings_from_args(args)
    suites = args.suites or list(SUITES)
    models = args.models or [settings.model]
    judge_spec = args.judge or settings.eval_judge
    try:
        judge = make_judge(judge_spec, settings) if judge_spec else None
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # Scenario cases load into an embedded engine of their own. With --live on an embedded store that
    # engine is the store's directory (chDB opens one directory per process); on a server, a temporary one.
    live_dir = settings.data_dir() if args.live else None
    own_dir = None if live_dir else Path(tempfile.mkdtemp(prefix="otel-ai-eval-"))
    data_dir = live_dir or own_dir
    assert data_dir is not None

    def wanted(name: str) -> bool:
        if args.quick and name.endswith(("-s2", "-s3")):
            return False
        return not args.case or args.case in name

    try:
        if live_dir is not None:
            ensure_free(settings, "`otel-ai eval --live`", "stop that serve first, or run on a copy of the directory")
        run_state = new_run(settings, data_dir, rate=args.rate, live=args.live, anchor=args.anchor)
        results = asyncio.run(run_suites(suites, models, run_state, min_score=args.min_score,
                                         progress=sys.stderr.isatty(), case_filter=wanted, judge=judge))
    except (ValueError, StoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if own_dir is not None:
            shutil.rmtree(own_dir, ignore_errors=True)
    print_table(results)
    if args.report:
        conditions = (f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, {os.cpu_count()} cores, "
                      f"Python {platform.python_version()}, models: {', '.join(models)}"
                      + (f", judge: {judge.label}" if judge else "")
                      + (", quick subset" if args.quick else "")
                      + (f", data ending {args.anchor.astimezone(UTC):%Y-%m-%d %H:%M} UTC" if args.anchor else ""))
        for path in write_reports(results, args.report, conditions):
            print(f"wrote {path}")
    failures = [f for r in results for f in r.failures]
    return 1 if failures else 0


def export_feedback(args: argparse.Namespace) -> int:
    from chat.feedback import export_feedback_cases
    from evals.feedback import dump_suite, feedback_suite
    store = open_store(settings_from_args(args), "`otel-ai eval export-feedback`",
                       "stop that serve first, or run on a copy of the directory")
    try:
        text = dump_suite(feedback_suite(export_feedback_cases(store)))
    finally:
        store.close()
    if args.out:
        args.out.write_text(text)
        print(f"wrote {args.out}")
    else:
        sys.stdout.write(text)
    return 0
