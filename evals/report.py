"""Eval results for people (a terminal table, Markdown) and for machines (JSON), models side by side."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from evals.cases import EvalOutput
from evals.judge import JUDGE_NAME
from evals.runner import COUNTERS, SuiteResult
from otel_ai.commands.common import terminal_text

MAX_LISTED = 20  # failed cases named in the terminal; the reports have them all


def _fmt(name: str, value: float | None) -> str:
    if value is None:
        return "-"
    if name in COUNTERS and name != "seconds_per_case":
        return f"{value:.0f}"
    if name == "seconds_per_case":
        return f"{value:.2f} s"
    return f"{value:.1%}"


def _grid(results: list[SuiteResult]) -> tuple[list[str], dict[str, list[str]], dict[tuple[str, str], dict]]:
    models = list(dict.fromkeys(r.model for r in results))
    metrics: dict[str, list[str]] = {}
    by_key = {(r.suite, r.model): r.scores for r in results}
    for r in results:
        names = metrics.setdefault(r.suite, [])
        for name in r.scores:
            if name not in names:
                names.append(name)
    for names in metrics.values():
        names.sort(key=lambda n: (n in COUNTERS, n))
    return models, metrics, by_key


def print_table(results: list[SuiteResult], console: Console | None = None) -> None:
    console = console or Console()
    models, metrics, by_key = _grid(results)
    table = Table(title="otel-ai eval", show_lines=False)
    table.add_column("suite")
    table.add_column("metric")
    for model in models:
        table.add_column(model, justify="right")
    for suite, names in metrics.items():
        for name in names:
            table.add_row(suite, name, *(_fmt(name, by_key.get((suite, m), {}).get(name)) for m in models))
        table.add_section()
    console.print(table)
    for r in results:
        for failure in r.failures:
            console.print(f"[red]below threshold[/red] {_plain(f'{r.model}: {failure}')}")
    failed = _failed_cases(results)
    for r, case, reasons in failed[:MAX_LISTED]:
        where = f"{r.suite}/{case.name} ({r.model}{_data_end(case)})"
        console.print(f"[red]failed[/red] {_plain(f'{where}: {_cell(reasons)}')}", highlight=False)
    if len(failed) > MAX_LISTED:
        console.print(f"... and {len(failed) - MAX_LISTED} more failed cases (see --report)")
    for r, case, failure in _evaluator_failures(results)[:MAX_LISTED]:
        where = f"{r.suite}/{case.name} ({r.model})"
        console.print(f"[yellow]not evaluated[/yellow] {_plain(f'{where}: {failure.error_message}')}", highlight=False)


def _plain(text: str) -> str:
    """Text for the terminal that neither rich nor the terminal acts on: reasons quote answers, and answers
    quote telemetry ("[link=...]" would become a live link, an ESC sequence would drive the terminal)."""
    return escape(terminal_text(text))


def _failed_cases(results: list[SuiteResult]) -> list[tuple[SuiteResult, Any, str]]:
    """Cases with a failed assertion, with the reasons (the LLM judge has its own section)."""
    failed = []
    for r in results:
        for c in r.report.cases:
            bad = {k: a for k, a in c.assertions.items() if not a.value and k != JUDGE_NAME}
            if bad:
                failed.append((r, c, "; ".join(f"{k}: {a.reason}" for k, a in bad.items())))
    return failed


def _data_end(case: Any) -> str:  # noqa: ANN401 - pydantic-evals ReportCase
    """Where the case's simulated data ended: `--anchor` with it loads the same data again."""
    end = case.output.truth.get("data_end")
    return f", data ending {end}" if end else ""


def _case_json(case: Any) -> dict[str, Any]:  # noqa: ANN401 - pydantic-evals ReportCase
    out: EvalOutput = case.output
    return {
        "name": case.name,
        "assertions": {k: {"value": v.value, "reason": v.reason} for k, v in case.assertions.items()},
        "scores": {k: {"value": v.value, "reason": v.reason} for k, v in case.scores.items()},
        "data_end": out.truth.get("data_end"),
        "seconds": round(out.seconds, 3),
        "tokens": out.tokens,
        "error": out.error,
        "evaluator_failures": [{"name": f.name, "error": f.error_message} for f in case.evaluator_failures],
        "turns": [
            {"question": t.question, "answer": t.answer.get("answer", ""),
             "root_causes": t.answer.get("root_causes", []), "model": t.answer.get("model")}
            for t in out.turns
        ],
    }


def to_json(results: list[SuiteResult]) -> list[dict[str, Any]]:
    return [
        {"suite": r.suite, "model": r.model, "scores": r.scores, "failures": r.failures,
         "seconds": round(r.seconds, 2), "cases": [_case_json(c) for c in r.report.cases]}
        for r in results
    ]


def to_markdown(results: list[SuiteResult], conditions: str = "") -> str:
    models, metrics, by_key = _grid(results)
    lines = ["# otel-ai eval report", ""]
    if conditions:
        lines += [conditions, ""]
    lines += ["| suite | metric | " + " | ".join(models) + " |", "|---|---|" + "---|" * len(models)]
    for suite, names in metrics.items():
        for name in names:
            cells = " | ".join(_fmt(name, by_key.get((suite, m), {}).get(name)) for m in models)
            lines.append(f"| {suite} | {name} | {cells} |")
    failed = _failed_cases(results)
    if failed:
        lines += ["", "## Failed cases", ""]
        lines += [f"- `{r.suite}/{c.name}` ({r.model}{_data_end(c)}): {reasons}" for r, c, reasons in failed]
    lines += _judge_section(results)
    errors = [x for x in _evaluator_failures(results) if x[2].name != JUDGE_NAME]
    if errors:
        lines += ["", "## Evaluator errors", ""]
        lines += [f"- `{r.suite}/{c.name}` ({r.model}) {f.name}: {_cell(f.error_message)}" for r, c, f in errors]
    return "\n".join(lines) + "\n"


def _evaluator_failures(results: list[SuiteResult]) -> list[tuple[SuiteResult, Any, Any]]:
    return [(r, c, f) for r in results for c in r.report.cases for f in c.evaluator_failures]


def _cell(text: str | None, limit: int = 400) -> str:
    """Text fit for one Markdown table cell: one line, no pipes, bounded."""
    flat = " ".join((text or "").split()).replace("|", "\\|")
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _judge_section(results: list[SuiteResult]) -> list[str]:
    """One row per judged case: the LLM judge's verdict (or why there is none) and its reason."""
    rows = []
    for r in results:
        for c in r.report.cases:
            verdict = c.assertions.get(JUDGE_NAME)
            failure = next((f for f in c.evaluator_failures if f.name == JUDGE_NAME), None)
            if verdict is not None:
                rows.append(f"| {r.suite} | {c.name} | {r.model} | {'pass' if verdict.value else 'FAIL'} | "
                            f"{_cell(verdict.reason)} |")
            elif failure is not None:
                rows.append(f"| {r.suite} | {c.name} | {r.model} | error | {_cell(failure.error_message)} |")
    if not rows:
        return []
    return ["", f"## {JUDGE_NAME}", "", "| suite | case | model | verdict | reason |", "|---|---|---|---|---|", *rows]


def write_reports(results: list[SuiteResult], directory: Path, conditions: str = "") -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    json_path, md_path = directory / "eval-report.json", directory / "eval-report.md"
    json_path.write_text(json.dumps(to_json(results), indent=2, default=str))
    md_path.write_text(to_markdown(results, conditions))
    return [json_path, md_path]
