"""Block Kit rendering of an agent `Answer` for Slack.

Slack limits what a message may hold (3000 characters per section, 50 blocks), so the message
carries the short answer, the ranked root causes with their numbers and the first pieces of
evidence; anything cut short is attached in full as a text file in the thread. Everything that
may come from telemetry is escaped (`&`, `<`, `>`), so span names or log bodies can never become
mentions (`<!channel>`) or links in Slack.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from agent.answer import Answer, Evidence

SECTION_LIMIT = 2900  # Slack allows 3000 characters in a section's text
ANSWER_LIMIT = 2 * SECTION_LIMIT
INLINE_EVIDENCE = 3
SQL_INLINE_LIMIT = 600
SUMMARY_INLINE_LIMIT = 300
FALLBACK_LIMIT = 300
TEXT_LIMIT = 39_000  # a message's top-level text (Slack truncates at 40,000)

Block = dict[str, Any]


@dataclass
class Attachment:
    """A file to upload into the thread next to the message (full evidence, charts)."""

    filename: str
    title: str
    content: bytes


@dataclass
class Rendered:
    """A message ready for chat.postMessage/chat.update plus the files that complete it."""

    text: str
    blocks: list[Block]
    files: list[Attachment] = field(default_factory=list)
    full_text: str = ""  # the answer as one mrkdwn text, for when Slack refuses the blocks

    def __post_init__(self) -> None:
        self.full_text = self.full_text or self.text


def escape(text: str) -> str:
    """Slack's three control characters; telemetry must never be read as markup."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


_LINK = re.compile(r"\[([^\]\n]+)\]\((https?://[^)\s]+)\)")
_BOLD = re.compile(r"\*\*(.+?)\*\*|__(.+?)__")
_ITALIC = re.compile(r"(?<![\w*])\*(?!\s)([^*\n]+?)(?<!\s)\*(?![\w*])")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*$", re.MULTILINE)
_BULLET = re.compile(r"^(\s*)[-*+]\s+", re.MULTILINE)


_TABLE = re.compile(r"(?:^\|.*\|[ \t]*(?:\n|$))+", re.MULTILINE)


def _table_as_code(match: re.Match[str]) -> str:
    """A markdown table (Slack has none) as a preformatted block with aligned columns."""
    rows = [[c.strip().replace("**", "").replace("`", "") for c in line.strip().strip("|").split("|")]
            for line in match.group(0).strip().splitlines()]
    rows = [r for r in rows if not all(re.fullmatch(r":?-{2,}:?", c) for c in r)]  # the |---| line
    widths = [max(len(r[i]) if i < len(r) else 0 for r in rows) for i in range(max(map(len, rows)))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)).rstrip() for r in rows]
    return "```\n" + "\n".join(lines) + "\n```\n"


def mrkdwn(markdown: str) -> str:
    """Markdown (what the agent writes) to Slack mrkdwn, leaving code spans and blocks alone; tables become
    preformatted blocks."""
    markdown = _TABLE.sub(_table_as_code, markdown)
    parts = re.split(r"(```.*?```|`[^`\n]*`)", markdown, flags=re.DOTALL)
    out = []
    for i, part in enumerate(parts):
        if i % 2:  # code: only escaping applies
            out.append(escape(part))
            continue
        text = escape(part)
        text = _HEADING.sub(lambda m: f"\x00{m.group(1)}\x00", text)
        text = _BULLET.sub(lambda m: f"{m.group(1)}• ", text)
        text = _BOLD.sub(lambda m: f"\x00{m.group(1) or m.group(2)}\x00", text)
        text = _ITALIC.sub(lambda m: f"_{m.group(1)}_", text)
        text = _LINK.sub(lambda m: f"<{m.group(2)}|{m.group(1)}>", text)
        out.append(text.replace("\x00", "*"))
    return "".join(out)


def plain(markdown: str) -> str:
    """Notification text (no markup): what phones and screen readers show."""
    text = re.sub(r"```.*?```", "[code]", markdown, flags=re.DOTALL)
    text = re.sub(r"^\s*(#+|>)\s*", "", text, flags=re.MULTILINE)
    text = re.sub(r"[*_`]", "", text)
    return escape(re.sub(r"\s+", " ", text).strip())


def section(text: str) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def context(text: str) -> Block:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}


def split_sections(text: str, limit: int = SECTION_LIMIT) -> list[str]:
    """Cut long text at line ends into pieces that each fit a section."""
    pieces: list[str] = []
    current = ""
    for line in text.splitlines(keepends=True):
        while len(line) > limit:
            if current:
                pieces.append(current)
                current = ""
            pieces.append(line[:limit])
            line = line[limit:]
        if len(current) + len(line) > limit:
            pieces.append(current)
            current = ""
        current += line
    if current.strip():
        pieces.append(current)
    return [p.rstrip("\n") for p in pieces if p.strip()]


def chat_url(base: str, conversation_id: str) -> str:
    """Where the chat UI opens this conversation (see docs/interfaces.md)."""
    return f"{base.rstrip('/')}/?conversation={quote(conversation_id, safe='')}"


def root_cause_lines(answer: Answer) -> str:
    lines = ["*Root causes* (most likely first)"]
    for i, rc in enumerate(answer.root_causes[:5], 1):
        op = f" `{escape(rc.operation)}`" if rc.operation else ""
        lines.append(f"{i}. *{escape(rc.service)}*{op} — {rc.kind}, confidence {rc.confidence:.0%}")
        if rc.evidence:
            lines.append(f"      {escape(clip(rc.evidence, 400))}")
    return "\n".join(lines)


_MARKER_LINE = re.compile(r"^\s*</?[a-z][a-z-]*>\s*$", re.MULTILINE)


def evidence_text(ev: Evidence, sql_limit: int | None, summary_limit: int | None) -> str:
    """One tool call as mrkdwn: what it was asked, what it saw, the SQL it ran (the first query when
    limited; limits of None mean everything, in full)."""
    args = ", ".join(f"{k}={v}" for k, v in ev.args.items() if k != "sql" and v not in (None, "", [], {}))
    status = "" if ev.ok else f" — failed: {escape(ev.error or 'error')}"
    lines = [f"*{escape(ev.tool)}*({escape(clip(args, 200))}){status}"]
    summary = _MARKER_LINE.sub("", ev.summary).strip()  # the untrusted-data markers are for models
    if summary:
        lines.append(escape(summary if summary_limit is None else clip(summary, summary_limit)))
    queries = ev.sql if sql_limit is None else ev.sql[:1]
    for sql in queries:
        body = sql if sql_limit is None else clip(sql, sql_limit)
        fenced = escape(body.replace("```", "'''"))
        lines.append(f"```{fenced}```")
    if len(queries) < len(ev.sql):
        lines.append(f"_+{len(ev.sql) - len(queries)} more quer{'y' if len(ev.sql) - len(queries) == 1 else 'ies'}"
                     " in the attached evidence_")
    return "\n".join(lines)


def notable_evidence(evidence: list[Evidence], limit: int = INLINE_EVIDENCE) -> list[Evidence]:
    """The tool calls worth showing first: named analyses before raw SQL lookups, failures included."""
    ranked = sorted(evidence, key=lambda ev: (ev.tool == "run_sql", ev.ok))
    return ranked[:limit]


def evidence_file(answer: Answer) -> Attachment:
    """The whole answer and every tool call with its SQL, as plain text for the thread."""
    parts = ["# Answer", "", answer.answer, ""]
    if answer.root_causes:
        parts += ["# Root causes", ""]
        for i, rc in enumerate(answer.root_causes, 1):
            op = f" {rc.operation}" if rc.operation else ""
            parts.append(f"{i}. {rc.service}{op} — {rc.kind}, confidence {rc.confidence:.2f}: {rc.evidence}")
        parts.append("")
    parts += ["# Evidence", ""]
    for ev in answer.evidence:
        parts.append(f"## {ev.tool}({ev.args})" + ("" if ev.ok else f" failed: {ev.error}"))
        parts += [ev.summary, ""]
        parts += [f"```sql\n{sql}\n```\n" for sql in ev.sql]
    return Attachment("otel-ai-evidence.md", "otel-ai evidence (full)", "\n".join(parts).encode())


def answer_blocks(answer: Answer, link: str | None = None) -> Rendered:
    """The message for an answer and, when something did not fit, the full evidence as a file."""
    blocks: list[Block] = []
    truncated = False
    body = mrkdwn(answer.answer.strip() or "(no answer)")
    if len(body) > ANSWER_LIMIT:
        body, truncated = clip(body, ANSWER_LIMIT), True
    blocks += [section(piece) for piece in split_sections(body)]
    if answer.root_causes:
        blocks.append(section(clip(root_cause_lines(answer), SECTION_LIMIT)))
    if answer.evidence:
        blocks.append({"type": "divider"})
        blocks.append(context(f"*Evidence*: {len(answer.evidence)} tool call(s)"))
        for ev in notable_evidence(answer.evidence):
            full = evidence_text(ev, None, None)
            short = evidence_text(ev, SQL_INLINE_LIMIT, SUMMARY_INLINE_LIMIT)
            truncated |= short != full
            blocks.append(section(clip(short, SECTION_LIMIT)))
        if len(answer.evidence) > INLINE_EVIDENCE:
            truncated = True
    trace_ids = [str(t["trace_id"]) for t in answer.traces if t.get("trace_id")]
    if trace_ids:
        blocks.append(context("Exemplar trace: " + ", ".join(f"`{escape(t)}`" for t in trace_ids[:3])
                              + " (ask `@otel-ai show trace <id>` for its waterfall)"))
    if truncated:
        blocks.append(context("Long parts are cut short here; the full answer and evidence are attached below."))
    if answer.follow_ups:
        blocks.append(context("Ask next: " + " · ".join(escape(q) for q in answer.follow_ups[:3])))
    footer = []
    if answer.model:
        footer.append(f"model `{escape(answer.model)}`")
    if "total" in answer.timings:
        footer.append(f"{answer.timings['total']:.1f} s")
    if link:
        footer.append(f"<{link}|Open this conversation in the chat UI>")
    if footer:
        blocks.append(context(" · ".join(footer)))
    files = [evidence_file(answer)] if truncated else []
    full = clip(body, TEXT_LIMIT - SECTION_LIMIT)
    if answer.root_causes:
        full += "\n\n" + root_cause_lines(answer)
    return Rendered(text=clip(plain(answer.answer), FALLBACK_LIMIT) or "otel-ai answer", blocks=blocks[:50],
                    files=files, full_text=full)


def notice(text: str) -> Rendered:
    """A one-line message (acknowledgement, refusal, error) as text and a single section."""
    return Rendered(text=text, blocks=[section(escape(text))])
