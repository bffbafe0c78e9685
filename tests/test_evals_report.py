"""The eval command's terminal report shows failure reasons as text: reasons quote answers, answers quote
telemetry, and neither rich's markup ("[link=...]") nor an ESC sequence in them may act on the terminal."""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass

from pydantic_evals import Case, Dataset
from pydantic_evals.evaluators import EvaluationReason, Evaluator, EvaluatorContext
from rich.console import Console

from evals.cases import EvalInput, EvalOutput, Expect, TurnRecord
from evals.report import print_table
from evals.runner import SuiteResult, summarize

HOSTILE = "span [link=http://evil.example]click[/link] \x1b]52;c;aGk=\x07 \x1b[2J [bold]x[/bold]"


@dataclass
class QuotesTheAnswer(Evaluator[EvalInput, EvalOutput, Expect]):
    """Fails, quoting the answer in its reason, as the real evaluators do."""

    def evaluate(self, ctx: EvaluatorContext[EvalInput, EvalOutput, Expect]) -> EvaluationReason:
        return EvaluationReason(value=False, reason=f"answer said: {ctx.output.turns[0].answer['answer']}")


def test_failure_reasons_cannot_drive_the_terminal() -> None:
    dataset = Dataset[EvalInput, EvalOutput, Expect](
        name="rca", cases=[Case(name="c", inputs=EvalInput(scenario="x", questions=["q"]), metadata=Expect())],
        evaluators=[QuotesTheAnswer()])

    async def task(inputs: EvalInput) -> EvalOutput:
        return EvalOutput(turns=[TurnRecord(question="q", answer={"answer": HOSTILE})], truth={})

    report = asyncio.run(dataset.evaluate(task, progress=False))
    out = io.StringIO()
    print_table([SuiteResult("rca", "builtin", report, summarize(report), [], 0.0)],
                Console(file=out, force_terminal=True, width=400))
    text = out.getvalue()
    assert "failed" in text and "answer said: span [link=http://evil.example]click[/link]" in text
    assert "\x1b]8;" not in text and "\x1b]52" not in text and "\x1b[2J" not in text  # no link, clipboard, clear
    assert "\\x1b]52;c;aGk=" in text and "[bold]x[/bold]" in text  # shown as written
