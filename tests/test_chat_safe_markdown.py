"""Issue 17 item 6: telemetry is data. Whatever a span name or log line holds, the chat shows it as
text: `safe_markdown` output, rendered by a CommonMark renderer (markdown-it, HTML on), has no images,
no outside links and no raw HTML, while the answer's own formatting (bold, lists, tables, code) stays."""

from __future__ import annotations

import re

import pytest
from markdown_it import MarkdownIt

from chat.web.render import markdown_table, safe_markdown

BEACON = "http://127.0.0.1:9/beacon.png"
HOSTILE = [
    f"![x]({BEACON})",
    f"![x]( <{BEACON}> \"title\")",
    f"[![x]({BEACON})](https://evil.example/)",
    "[click here](https://evil.example/phish)",
    "[click](https://evil.example/p?a=(1))",
    "[p](//evil.example/x)",
    f'<img src="{BEACON}">',
    "<script>alert(1)</script>",
    '<a href="https://evil.example">x</a>',
    "<https://evil.example/auto>",
    "[x][r]\n\n[r]: https://evil.example/ref",
    f"`a`![x]({BEACON})`",
    f"**bold ![x]({BEACON})**",
    f"- item [x](https://evil.example)\n- ![y]({BEACON})",
]


def render(markdown: str) -> str:
    return MarkdownIt("commonmark", {"html": True}).enable("table").render(markdown)


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_telemetry_renders_as_text(text: str) -> None:
    answer = f"**checkout** is slow because of span\n\n{text}\n\nin payments."
    assert re.search(r"<img|<a |<script", render(answer)), "the case must be hostile when left raw"
    html = render(safe_markdown(answer))
    assert "<img" not in html and "<script" not in html, html
    assert "<a " not in html, html
    assert "<strong>checkout</strong>" in html


def test_formatting_and_code_are_kept() -> None:
    answer = ("## Why\n\n**payments** is slow (p95 < 900 ms > 300 ms).\n\n- one\n- two\n\n"
              f"`![x]({BEACON})` stays code\n\n```sql\nSELECT '<b>' AS x -- [a](http://b)\n```\n\n"
              "[open the trace](/chat?conversation=x)")
    html = render(safe_markdown(answer))
    assert "<h2>Why</h2>" in html and "<li>one</li>" in html and "<strong>payments</strong>" in html
    assert "p95 &lt; 900 ms &gt; 300 ms" in html
    assert f"<code>![x]({BEACON})</code>" in html
    assert "SELECT '&lt;b&gt;' AS x -- [a](http://b)" in html
    assert '<a href="/chat?conversation=x">open the trace</a>' in html


def test_bare_addresses_are_not_autolinked() -> None:
    shown = safe_markdown("see https://evil.example/x, www.evil.example and ops@evil.example")
    # GFM (Chainlit's renderer) autolinks these three forms; as code they are text (the browser test
    # checks that in Chromium)
    assert shown == "see `https://evil.example/x,` `www.evil.example` and `ops@evil.example`"
    assert render(shown).count("evil.example") == 3  # still readable, as text


def test_table_cells_stay_escaped_and_lose_their_links() -> None:
    table = markdown_table(["name"], [{"name": f"![x]({BEACON}) https://evil.example"}])
    html = render(safe_markdown(table))
    assert "<table>" in html and "<img" not in html and "<a " not in html
    assert "`https://evil.example`" in safe_markdown(table)


def test_a_stream_cut_anywhere_is_safe() -> None:
    answer = f"**a** ![x]({BEACON}) and ```\ncode ![y]({BEACON})\n``` [l](https://evil.example)"
    for cut in range(len(answer) + 1):
        html = render(safe_markdown(answer[:cut]))
        assert "<img" not in html and "<a " not in html, answer[:cut]
