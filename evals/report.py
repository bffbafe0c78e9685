"""Eval results for people (a terminal table, Markdown) and for machines (JSON), models side by side."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from evals.cases import EvalOutput
from evals.runner import SuiteResult

COUNTERS = ("cases", "seconds_per_case", "tokens")


def _fmt(name: str, value: float | None) -> str:
    if value is None:
        return "-"
    if name == "cases" or name == "tokens":
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
            console.print(f"[red]below threshold[/red] {r.model}: {failure}")


def _case_json(case: Any) -> dict[str, Any]:  # noqa: ANN401 - pydantic-evals ReportCase
    out: EvalOutput = case.output
    return {
        "name": case.name,
        "assertions": {k: {"value": v.value, "reason": v.reason} for k, v in case.assertions.items()},
        "scores": {k: {"value": v.value, "reason": v.reason} for k, v in case.scores.items()},
        "seconds": round(out.seconds, 3),
        "tokens": out.tokens,
        "error": out.error,
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
    failed = [(r, c) for r in results for c in r.report.cases
              if any(not a.value for a in c.assertions.values())]
    if failed:
        lines += ["", "## Failed cases", ""]
        for r, c in failed:
            reasons = "; ".join(f"{k}: {a.reason}" for k, a in c.assertions.items() if not a.value)
            lines.append(f"- `{r.suite}/{c.name}` ({r.model}): {reasons}")
    return "\n".join(lines) + "\n"


def write_reports(results: list[SuiteResult], directory: Path, conditions: str = "") -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    json_path, md_path = directory / "eval-report.json", directory / "eval-report.md"
    json_path.write_text(json.dumps(to_json(results), indent=2, default=str))
    md_path.write_text(to_markdown(results, conditions))
    return [json_path, md_path]
