"""`otel-ai ask "QUESTION" [--json] [--server URL] [--model M] [--since 30m]`.

When `--server` is given, or the `otel-ai serve` at the configured host and port holds our store
(chDB allows one process per directory), the question goes to its `POST /api/ask`; otherwise the
store is opened here.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from otel_ai.commands.common import add_data_option, settings_from_args, terminal_text
from otel_ai.commands.remote import Server, ServerError, find_server, open_store
from otel_ai.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ask", help="ask a question about your telemetry; answers with evidence")
    p.add_argument("question", help='e.g. "why is checkout slow?"')
    p.add_argument("--json", action="store_true", help="print the structured answer (same as POST /api/ask)")
    p.add_argument("--server", help="URL of a running otel-ai serve (e.g. http://127.0.0.1:8000)")
    p.add_argument("--model", help="model spec: builtin, ollama:<m>, openai:<m>, anthropic:<m>, comma = fallback")
    p.add_argument("--since", help="window length when the question names none (e.g. 30m, 2h)")
    p.add_argument("--role", default="sre", help="audience of the answer (default sre)")
    add_data_option(p)
    p.set_defaults(func=run)


def ask_server(server: Server, args: argparse.Namespace) -> dict[str, Any]:
    body = {"question": args.question, "since": args.since, "model": args.model, "role": args.role}
    try:
        return server.call("POST", "/api/ask", json=body, timeout=600)
    except ServerError as exc:
        raise SystemExit(f"error: {exc}") from None


def ask_local(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    from agent import ask_sync
    from agent.models import AgentError
    from store import StorePool

    store = open_store(settings, "`otel-ai ask`", "pass --server URL of the otel-ai serve that holds it")
    spare = StorePool(store, 1)  # a second handle, so the tools of one step run side by side
    try:
        answer = ask_sync(args.question, store=store, settings=settings, since=args.since, model=args.model,
                          role=args.role, spare=spare)
    except (AgentError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from None
    finally:
        spare.close()
        store.close()
    return answer.model_dump(mode="json")


def render(answer: dict[str, Any]) -> str:
    """Plain-text rendering for a terminal: the answer, ranked causes, the evidence trail."""
    lines = [answer["answer"].strip(), ""]
    if answer.get("root_causes"):
        lines.append("Root causes:")
        for i, rc in enumerate(answer["root_causes"], 1):
            op = f" / {rc['operation']}" if rc.get("operation") else ""
            lines.append(f"  {i}. {rc['service']}{op}  [{rc['kind']}, confidence {rc['confidence']:.2f}]")
    lines.append("Evidence:")
    for ev in answer.get("evidence", []):
        status = "ok" if ev["ok"] else f"failed: {ev.get('error')}"
        args = ", ".join(f"{k}={v}" for k, v in ev.get("args", {}).items() if v is not None and k != "sql")
        lines.append(f"  - {ev['tool']}({args}) {status}; {len(ev.get('sql', []))} query(ies)")
    if answer.get("follow_ups"):
        lines.append("Try next: " + " | ".join(answer["follow_ups"]))
    total = answer.get("timings", {}).get("total")
    lines.append(f"model: {answer.get('model')}" + (f", {total:.2f}s" if total is not None else ""))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if not args.question.strip():
        print('error: empty question: ask something, e.g. otel-ai ask "why is checkout slow?"', file=sys.stderr)
        return 2
    settings = settings_from_args(args)
    if args.since:
        from tools.timewindow import parse_duration

        try:
            parse_duration(args.since)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    server = find_server(settings, args.server)
    try:
        answer = ask_server(server, args) if server else ask_local(settings, args)
    except SystemExit as exc:
        print(terminal_text(str(exc.code)), file=sys.stderr)
        return 1
    # JSON escapes control characters itself; the text names telemetry verbatim
    print(json.dumps(answer, indent=2) if args.json else terminal_text(render(answer)))
    return 0
