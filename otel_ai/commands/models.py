"""`otel-ai models [list|pull NAME|check]`: the role -> model map and the local Ollama models."""

from __future__ import annotations

import argparse
import json
import sys

from otel_ai.commands.common import settings_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="show the model routing; list, pull and health-check Ollama models")
    p.add_argument("action", nargs="?", default="list", choices=["list", "pull", "check"],
                   help="list (default): routing + local models; pull NAME; check: can each role's model answer")
    p.add_argument("name", nargs="?", help="model to pull (e.g. llama3.2)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from agent.models import ModelConfigError, parse_spec, resolve_model, role_map
    from agent.ollama import OllamaClient, OllamaError

    settings = settings_from_args(args)
    client = OllamaClient(settings.ollama_base_url)
    if args.action == "pull":
        if not args.name:
            print("error: name the model to pull, e.g. `otel-ai models pull llama3.2`", file=sys.stderr)
            return 2
        try:
            client.pull(args.name, progress=lambda e: print(_progress(e), flush=True))
        except OllamaError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"pulled {args.name}")
        return 0

    roles = role_map(settings)
    health = client.health()
    local = []
    if health.ok:
        try:
            local = [m.name for m in client.list_models()]
        except OllamaError as exc:
            health = type(health)(ok=False, base_url=health.base_url, error=str(exc))
    problems: dict[str, str] = {}
    for role, spec in roles.items():
        try:
            resolve_model(settings, role)
            for s in parse_spec(spec):
                if s.provider == "ollama" and health.ok and s.name not in local and f"{s.name}:latest" not in local:
                    problems.setdefault(role, f"{s} is not pulled: run `otel-ai models pull {s.name}`")
                elif s.provider == "ollama" and not health.ok:
                    problems.setdefault(role, f"{s}: {health.error}")
        except ModelConfigError as exc:
            problems[role] = str(exc)
    report = {
        "roles": roles,
        "privacy_local_only": settings.privacy_local_only,
        "ollama": {"base_url": health.base_url, "ok": health.ok, "version": health.version, "error": health.error,
                   "models": local},
        "problems": problems,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for role, spec in roles.items():
            print(f"{role:8s} {spec}" + (f"   ! {problems[role]}" if role in problems else ""))
        state = f"ok (version {health.version})" if health.ok else f"unavailable: {health.error}"
        print(f"ollama   {health.base_url}: {state}")
        for name in local:
            print(f"  - {name}")
    return 1 if args.action == "check" and problems else 0


def _progress(event: dict) -> str:
    if event.get("total") and event.get("completed") is not None:
        return f"{event.get('status')}: {100 * event['completed'] / event['total']:.0f}%"
    return str(event.get("status", ""))
