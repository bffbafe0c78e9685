"""Prompt templates as text files, versioned with the code; rendered with live values."""

from __future__ import annotations

from functools import cache
from pathlib import Path

PROMPTS_DIR = Path(__file__).parent


@cache
def load(name: str) -> str:
    """The text of prompts/<name> (e.g. 'system.md')."""
    return (PROMPTS_DIR / name).read_text(encoding="utf-8")


def render_system_prompt(schema: str, window: str, role: str = "sre") -> str:
    """The system prompt for LLM models: instructions, live schema, SQL guidance, worked examples."""
    return load("system.md").format(
        schema=schema.strip() or "(schema unavailable)",
        window=window,
        role=role,
        sql_guidance=load("sql_guidance.md").strip(),
        examples=load("examples.md").strip(),
    )
