"""`otel-ai models [list|pull NAME|check]`: the role -> model map, the providers, the local Ollama models.

A provider nobody configured (no OLLAMA_BASE_URL and no role on ollama, no API key) is listed as
"not configured", not probed and reported as failing."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from pydantic import SecretStr

from otel_ai.commands.common import settings_from_args

if TYPE_CHECKING:
    from agent.models import ModelSpec


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
    used = {s.provider for spec in roles.values() for s in _specs(spec)}
    # Ollama counts as configured when its URL is set or a role routes to it; else nobody expects it to run.
    ollama_on = "ollama_base_url" in settings.model_fields_set or "ollama" in used
    health = client.health() if ollama_on else None
    local = []
    if health is not None and health.ok:
        try:
            local = [m.name for m in client.list_models()]
        except OllamaError as exc:
            health = type(health)(ok=False, base_url=health.base_url, error=str(exc))
    ollama_ok = health is not None and health.ok
    problems: dict[str, str] = {}
    for role, spec in roles.items():
        try:
            resolve_model(settings, role)
            for s in parse_spec(spec):
                if s.provider == "ollama" and ollama_ok and s.name not in local and f"{s.name}:latest" not in local:
                    problems.setdefault(role, f"{s} is not pulled: run `otel-ai models pull {s.name}`")
                elif s.provider == "ollama" and not ollama_ok:
                    problems.setdefault(role, f"{s}: {health.error if health else 'Ollama is not configured'}")
        except ModelConfigError as exc:
            problems[role] = str(exc)
    providers = {
        "ollama": "not configured" if health is None else "ok" if health.ok else "unavailable",
        "openai": "configured" if _secret(settings.openai_api_key) else "not configured",
        "anthropic": "configured" if _secret(settings.anthropic_api_key) else "not configured",
    }
    report = {
        "roles": roles,
        "privacy_local_only": settings.privacy_local_only,
        "providers": providers,
        "ollama": {"configured": health is not None, "base_url": client.base_url, "ok": ollama_ok,
                   "version": health.version if health else None, "error": health.error if health else None,
                   "models": local},
        "problems": problems,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for role, spec in roles.items():
            print(f"{role:9s} {spec}" + (f"   ! {problems[role]}" if role in problems else ""))
        if health is None:
            print("ollama    not configured (set OLLAMA_BASE_URL, or route a role to ollama:<model>)")
        else:
            state = f"ok (version {health.version})" if health.ok else f"unavailable: {health.error}"
            print(f"ollama    {health.base_url}: {state}")
        for name in local:
            print(f"  - {name}")
        for name, key in (("openai", "OPENAI_API_KEY"), ("anthropic", "ANTHROPIC_API_KEY")):
            print(f"{name:9s} {providers[name]}" + (f" (set {key})" if providers[name] == "not configured" else ""))
    return 1 if args.action == "check" and problems else 0


def _specs(spec: str) -> list[ModelSpec]:
    """The parsed entries of a role's spec; a malformed one shows up as that role's problem instead."""
    from agent.models import ModelConfigError, parse_spec

    try:
        return parse_spec(spec)
    except ModelConfigError:
        return []


def _secret(value: SecretStr | None) -> bool:
    return bool(value and value.get_secret_value().strip())


def _progress(event: dict) -> str:
    if event.get("total") and event.get("completed") is not None:
        return f"{event.get('status')}: {100 * event['completed'] / event['total']:.0f}%"
    return str(event.get("status", ""))
