"""Turn answers and tool results into what the chat shows: markdown tables, SQL blocks, figures.

Pure functions (no Chainlit import) so they are tested directly. Telemetry values are untrusted:
table cells are escaped for markdown, so a span name cannot inject links, HTML or layout, and every
text the chat shows passes `safe_markdown`, which keeps the answer's formatting but turns images,
outside links, raw HTML and bare URLs (from telemetry or a model quoting it) into plain text.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Sequence
from typing import Any

import plotly.graph_objects as go

from tools.charts import plain
from tools.result import CLOSE_MARK, OPEN_MARK

MAX_TABLE_ROWS = 50
MAX_CELL = 80
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+!|~])")


def cell(value: Any, max_chars: int = MAX_CELL) -> str:  # noqa: ANN401
    """One table cell: compact numbers, single line, truncated, markdown-escaped."""
    if value is None:
        text = ""
    elif isinstance(value, float):
        text = f"{value:,.3f}".rstrip("0").rstrip(".") if abs(value) < 1e15 else f"{value:.3g}"
    elif isinstance(value, dict | list):
        text = json.dumps(value, default=str, separators=(",", ":"))
    else:
        text = str(value)
    text = " ".join(text.split())
    if len(text) > max_chars:
        text = text[: max_chars - 1] + "…"
    return _MD_SPECIAL.sub(r"\\\1", text)


_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
_CODE_SPAN = re.compile(r"(?<![`\\])(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.DOTALL)
_INLINE_LINK = re.compile(r"(?<!\\)(!?)\[((?:\\.|[^\]\\\n])*)\]\(\s*<?([^()\s<>]*(?:\([^()\s]*\)[^()\s<>]*)*)>?"
                          r"(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
_REF_DEFINITION = re.compile(r"^( {0,3})\[([^\]\n]+)\]:", re.MULTILINE)
# What GFM (Chainlit's renderer) would autolink: scheme://..., www...., e-mail addresses. Backslash
# escapes do not stop it (checked in Chromium), code spans do.
_BARE_ADDRESS = re.compile(r"(?i)(?<![\w`])(?:[a-z][a-z0-9+.-]{0,31}://|www\.)[^\s<>`|\\]+"
                           r"|(?<![\w`])[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_SAME_ORIGIN = ("/", "#", "?")


def _code_segments(text: str) -> list[tuple[bool, str]]:
    """Split markdown into (is_code, text): fenced blocks (an unclosed fence runs to the end, as in
    CommonMark, which also holds for a stream cut mid-block) and inline code spans."""
    blocks: list[tuple[bool, str]] = []
    prose: list[str] = []
    fence: str | None = None
    code: list[str] = []
    for line in text.splitlines(keepends=True):
        opened = _FENCE.match(line)
        if fence is None:
            if opened:
                blocks.append((False, "".join(prose)))
                prose, fence, code = [], opened.group(1), [line]
            else:
                prose.append(line)
            continue
        code.append(line)
        closing = opened and opened.group(1)[0] == fence[0] and len(opened.group(1)) >= len(fence)
        if closing and not line.strip().lstrip(fence[0]):
            blocks.append((True, "".join(code)))
            fence, code = None, []
    blocks.append((True, "".join(code)) if fence is not None else (False, "".join(prose)))
    segments: list[tuple[bool, str]] = []
    for is_code, chunk in blocks:
        if is_code:
            segments.append((True, chunk))
            continue
        last = 0
        for m in _CODE_SPAN.finditer(chunk):
            segments += [(False, chunk[last:m.start()]), (True, m.group(0))]
            last = m.end()
        segments.append((False, chunk[last:]))
    return [seg for seg in segments if seg[1]]


def _delink(text: str) -> str:
    """Bare addresses as code: the renderer would make `http://x`, `www.x` and `a@b.c` clickable links."""
    return _BARE_ADDRESS.sub(lambda m: f"`{m.group(0)}`", text)


def _prose(text: str) -> str:
    text = re.sub(r"(?<!\\)<", "&lt;", text)  # no raw HTML, no <http://...> autolinks

    def link(m: re.Match[str]) -> str:
        image, label, target = m.group(1), m.group(2), m.group(3)
        if not image and target.startswith(_SAME_ORIGIN) and not target.startswith("//"):
            return m.group(0)  # a link inside the chat stays a link
        shown = f"{label} ({target})" if label.strip() else target
        return ("image " if image else "") + shown

    text = _INLINE_LINK.sub(link, text)
    text = re.sub(r"(?<!\\)!\[", "!\\[", text)  # an image the pattern missed (nested brackets) stays text
    text = _REF_DEFINITION.sub(lambda m: f"{m.group(1)}\\[{m.group(2)}]:", text)
    return _delink(text)


def safe_markdown(text: str) -> str:
    """Markdown fit to show a person when parts of it came from telemetry: formatting (bold, lists,
    tables, code) stays; images never load and outside links, autolinks and raw HTML show as text.
    Code spans and blocks are left alone (the renderer shows them literally)."""
    return "".join(chunk if is_code else _prose(chunk) for is_code, chunk in _code_segments(text))


def markdown_table(columns: Sequence[str], rows: Sequence[dict[str, Any]], max_rows: int = MAX_TABLE_ROWS,
                   max_cell: int = MAX_CELL) -> str:
    """A GitHub-flavoured markdown table of the first `max_rows` rows, with a note when cut."""
    if not columns:
        return "_no columns_"
    if not rows:
        return "_no rows_"
    lines = [
        "| " + " | ".join(cell(c) for c in columns) + " |",
        "| " + " | ".join("---" for _ in columns) + " |",
    ]
    for row in rows[:max_rows]:
        lines.append("| " + " | ".join(cell(row.get(c), max_cell) for c in columns) + " |")
    if len(rows) > max_rows:
        lines.append(f"\n_showing {max_rows} of {len(rows)} rows_")
    return "\n".join(lines)


def sql_block(sql: str) -> str:
    return "```sql\n" + sql.strip().replace("```", "` ` `") + "\n```"


def text_block(text: str) -> str:
    return "```text\n" + text.strip().replace("```", "` ` `") + "\n```"


def evidence_markdown(sql: Iterable[str], summary: str, error: str | None) -> str:
    """A tool step's output: every query it ran as highlighted SQL, then what it found."""
    parts = [sql_block(q) for q in sql]
    if error:
        parts.append(f"**Failed:** {cell(error)}")
    # The telemetry fences tell a model "this is data"; people see the data without them.
    summary = "\n".join(line for line in summary.splitlines() if line.strip() not in (OPEN_MARK, CLOSE_MARK))
    if summary.strip():
        parts.append(text_block(summary))
    return "\n\n".join(parts) or "_no output_"


def root_causes_markdown(root_causes: Sequence[Any]) -> str:
    """Ranked root causes as a table (service, operation, kind, confidence, evidence)."""
    if not root_causes:
        return ""
    rows = [
        {"#": i, "service": rc.service, "operation": rc.operation or "", "kind": rc.kind,
         "confidence": f"{rc.confidence:.0%}", "evidence": rc.evidence}
        for i, rc in enumerate(root_causes, 1)
    ]
    return "**Ranked root causes**\n\n" + markdown_table(list(rows[0]), rows, max_cell=240)


def figure(spec: dict[str, Any]) -> go.Figure:
    """A Plotly figure from its JSON (`fig.to_plotly_json()`), tolerant of unknown properties."""
    return go.Figure(spec, skip_invalid=True)


_SPAN_KEYS = {
    "service": ("service", "ServiceName", "service_name"),
    "name": ("name", "operation", "SpanName", "span_name"),
    "start": ("offset_ms", "start_ms", "start_offset_ms"),
    "duration": ("duration_ms", "Duration_ms", "duration"),
    "status": ("status", "StatusCode", "status_code"),
    "depth": ("depth", "level"),
}


def _pick(span: dict[str, Any], field: str, default: Any = None) -> Any:  # noqa: ANN401
    for key in _SPAN_KEYS[field]:
        if key in span and span[key] is not None:
            return span[key]
    return default


def trace_spans(trace: dict[str, Any]) -> list[dict[str, Any]]:
    for key in ("spans", "rows", "waterfall"):
        if isinstance(trace.get(key), list):
            return [s for s in trace[key] if isinstance(s, dict)]
    return []


def waterfall_figure(trace: dict[str, Any], max_spans: int = 40) -> go.Figure | None:
    """An exemplar trace as a compact waterfall: one bar per span at its offset; errors red, the
    critical path amber."""
    spans = trace_spans(trace)[:max_spans]
    if not spans:
        return None
    labels, starts, durations, colors, texts = [], [], [], [], []
    for i, span in enumerate(spans):
        depth = int(_pick(span, "depth", 0) or 0)
        service, name = _pick(span, "service", ""), _pick(span, "name", "")
        label = f"{service} {name}".strip()
        labels.append(plain(f"{i:02d} " + "· " * min(depth, 4) + (label if len(label) <= 44 else label[:43] + "…")))
        starts.append(float(_pick(span, "start", 0) or 0))
        durations.append(max(float(_pick(span, "duration", 0) or 0), 0.01))
        error = str(_pick(span, "status", "")).lower() in ("error", "2", "status_code_error")
        colors.append("#dc2626" if error else "#f59e0b" if span.get("critical") else "#2563eb")
        texts.append(f"{durations[-1]:,.1f} ms")
    fig = go.Figure(go.Bar(
        x=durations, y=labels, base=starts, orientation="h", marker_color=colors, text=texts,
        textposition="auto", cliponaxis=False,
        hovertemplate="%{y}<br>start %{base:.1f} ms, %{x:.1f} ms<extra></extra>",
    ))
    trace_id = str(trace.get("trace_id") or trace.get("TraceId") or "")
    fig.update_layout(
        title=plain(f"Trace {trace_id[:16]}") if trace_id else "Exemplar trace",
        height=min(120 + 22 * len(spans), 900), margin=dict(l=10, r=30, t=40, b=30),
        xaxis_title="ms since trace start", showlegend=False,
    )
    fig.update_yaxes(autorange="reversed", automargin=True)
    return fig


def chart_or_none(result: Any, title: str | None = None) -> go.Figure | None:  # noqa: ANN401
    """`tools.charts.chart_for`, but a chart is a nicety: a failure to draw one never fails the reply."""
    from tools.charts import chart_for

    try:
        return chart_for(result, title=title)
    except Exception:
        logging.getLogger("otel_ai.chat").exception("chart for %s failed", getattr(result, "name", "?"))
        return None


def plan_markdown(planned: Any) -> str:  # noqa: ANN401 - agent.dashboard_planner.PlannedDashboard
    """The planner's step: which model planned, each panel with why, and what was dropped."""
    lines = [f"Planned by `{planned.model}`:"]
    lines += [f"- **{cell(p.title, 120)}** ({cell(p.why, 200)})" for p in planned.panels]
    if note := plan_notes_markdown(planned):
        lines += ["", note]
    return "\n".join(lines)


def plan_notes_markdown(planned: Any) -> str:  # noqa: ANN401
    """Who planned the dashboard, panels dropped with the reason, fallbacks: shown under the dashboard."""
    lines = [f"Panels chosen by `{planned.model}`."]
    for d in planned.dropped:
        lines.append(f"- Dropped panel **{cell(d.title, 120)}**: {cell(d.reason, 300)}")
    lines += [f"- _{cell(n, 400)}_" for n in planned.notes]
    return "\n".join(lines)
