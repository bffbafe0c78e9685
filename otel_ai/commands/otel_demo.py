"""`otel-ai otel-demo setup|up|down|status|validate`: the official OpenTelemetry Demo with otel-ai as its backend.

`setup` clones the demo at a pinned release; `up`/`down`/`status` shell out to `docker compose` with the
demo's compose file plus deploy/otel-demo/compose.override.yaml (which adds otel-ai and points the demo
collector's exporters at it); `validate` checks that traces, logs and metrics from the demo's services
arrive, by querying counts through otel-ai's HTTP API (or a store URL).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from otel_ai.commands.common import add_data_option, settings_from_args, terminal_text
from otel_ai.commands.remote import Server, ServerError, find_server, open_store

DEMO_REPO = "https://github.com/open-telemetry/opentelemetry-demo.git"
DEMO_REF = "2.0.2"
DEFAULT_DIR = "otel-demo"
# Services of the demo whose telemetry proves the whole path works.
DEMO_SERVICES = ("frontend", "checkout", "cart", "payment", "product-catalog")


class DemoError(RuntimeError):
    """A precondition for running the demo is missing (docker, git, the checkout)."""


def source_root() -> Path:
    """The otel-ai source checkout (Dockerfile + deploy/); the demo builds otel-ai's image from it."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "Dockerfile").is_file() or not (root / "deploy" / "otel-demo").is_dir():
        raise DemoError(f"otel-ai's source checkout (Dockerfile, deploy/otel-demo) was not found at {root}: "
                        "run otel-demo from a clone of the otel-ai repository")
    return root


def _docker() -> str:
    docker = shutil.which("docker")
    if not docker:
        raise DemoError("docker was not found on PATH: install Docker Engine (or Docker Desktop) with the "
                        "compose plugin, then retry")
    info = subprocess.run([docker, "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True)
    if info.returncode != 0:
        detail = (info.stderr or info.stdout).strip().splitlines()
        raise DemoError("the Docker engine is not reachable (is the daemon running, and may this user use it?): "
                        + (detail[-1] if detail else f"docker info exited {info.returncode}"))
    version = subprocess.run([docker, "compose", "version"], capture_output=True, text=True)
    if version.returncode != 0:
        raise DemoError("`docker compose` is not available: install the Docker Compose v2 plugin")
    return docker


def _demo_dir(args: argparse.Namespace) -> Path:
    return Path(args.dir).expanduser().resolve()


def compose_command(docker: str, demo: Path, minimal: bool, *verb: str) -> tuple[list[str], dict[str, str]]:
    """The `docker compose` command line and environment for the demo plus otel-ai's override."""
    compose_file = demo / ("docker-compose.minimal.yml" if minimal else "docker-compose.yml")
    if not compose_file.is_file():
        raise DemoError(f"{compose_file} not found: run `otel-ai otel-demo setup --dir {demo}` first")
    root = source_root()
    override = root / "deploy" / "otel-demo" / "compose.override.yaml"
    extras = root / "deploy" / "otel-demo" / "otelcol-config-extras.yml"
    cmd = [docker, "compose", "--project-directory", str(demo), "-f", str(compose_file), "-f", str(override)]
    if (demo / ".env").is_file():
        cmd += ["--env-file", str(demo / ".env")]
    env = {
        **os.environ,
        "OTEL_AI_SOURCE": str(root),
        "OTEL_AI_DEMO_EXTRAS": str(extras),
        "OTEL_COLLECTOR_CONFIG_EXTRAS": str(extras),
    }
    return [*cmd, *verb], env


def _run(cmd: list[str], env: dict[str, str] | None = None) -> int:
    print("+ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, env=env).returncode


def cmd_setup(args: argparse.Namespace) -> int:
    demo = _demo_dir(args)
    if (demo / "docker-compose.yml").is_file():
        print(f"the OpenTelemetry Demo is already at {demo}")
        return 0
    git = shutil.which("git")
    if not git:
        raise DemoError("git was not found on PATH: install git to fetch the OpenTelemetry Demo")
    source_root()
    code = _run([git, "clone", "--depth", "1", "--branch", args.ref, args.repo, str(demo)])
    if code == 0:
        print(f"OpenTelemetry Demo {args.ref} is at {demo}; next: otel-ai otel-demo up --dir {args.dir}")
    return code


def cmd_compose(args: argparse.Namespace) -> int:
    docker = _docker()
    verb = {
        "up": ["up", "-d", "--build"],
        "down": ["down", *(["--volumes"] if getattr(args, "volumes", False) else [])],
        "status": ["ps"],
    }[args.demo_command]
    cmd, env = compose_command(docker, _demo_dir(args), args.minimal, *verb)
    code = _run(cmd, env)
    if code == 0 and args.demo_command == "up":
        print("demo starting: shop at http://localhost:8080, otel-ai chat at http://localhost:8000; "
              "check data with `otel-ai otel-demo validate`")
    return code


METRIC_TABLES = ("gauge", "sum", "histogram", "exponential_histogram", "summary")


def count_queries(minutes: int) -> dict[str, list[str]]:
    """Plain SELECTs over the telemetry tables (they pass the agent's SQL guard behind /api/sql)."""
    since = f"now() - INTERVAL {int(minutes)} MINUTE"
    return {
        "traces": [f"SELECT count() AS n FROM otel_traces WHERE Timestamp > {since}"],
        "logs": [f"SELECT count() AS n FROM otel_logs WHERE Timestamp > {since}"],
        "metrics": [f"SELECT count() AS n FROM otel_metrics_{t} WHERE TimeUnix > {since}" for t in METRIC_TABLES],
    }


SERVICES_QUERY = ("SELECT DISTINCT ServiceName AS service FROM otel_traces "
                  "WHERE Timestamp > now() - INTERVAL {minutes} MINUTE ORDER BY service")


def _rows_via_api(server: Server, sql: str) -> list[dict[str, Any]]:
    try:
        body = server.call("POST", "/api/sql", json={"sql": sql}, timeout=30)
    except ServerError as exc:
        raise DemoError(str(exc) if exc.status is None else f"{server.url}/api/sql: {exc}") from None
    columns, rows = body.get("columns", []), body.get("rows", [])
    return [row if isinstance(row, dict) else dict(zip(columns, row, strict=False)) for row in rows]


def cmd_validate(args: argparse.Namespace) -> int:
    minutes = args.minutes
    settings = settings_from_args(args)
    # --data/--clickhouse-url: that store, through the serve holding it if one does; else --server's API
    server = find_server(settings) if args.data or args.clickhouse_url else find_server(settings, args.server)
    if server is None:
        store = open_store(settings, "`otel-ai otel-demo validate`", "pass --server URL of the serve that holds it")
        missing_tables = {"otel_traces", "otel_logs", *(f"otel_metrics_{t}" for t in METRIC_TABLES)} - set(
            store.tables())
        if missing_tables:
            raise DemoError(f"database {store.database} at {store.url.redacted()} has no "
                            f"{', '.join(sorted(missing_tables))}: not an otel-ai store yet "
                            "(it gets its tables when otel-ai serve starts)")

        def fetch(sql: str) -> list[dict[str, Any]]:
            return store.query(sql).dicts()
    else:
        def fetch(sql: str) -> list[dict[str, Any]]:
            return _rows_via_api(server, sql)

    counts = {kind: sum(int(fetch(sql)[0]["n"]) for sql in queries)
              for kind, queries in count_queries(minutes).items()}
    services = [r["service"] for r in fetch(SERVICES_QUERY.format(minutes=minutes))]

    problems = [f"no {kind} in the last {minutes} minutes" for kind, n in counts.items() if n == 0]
    if len(services) < args.min_services:
        problems.append(f"{len(services)} services sent traces, expected at least {args.min_services}")
    missing = [s for s in args.expect_service or [] if s not in services]
    if missing:
        problems.append(f"no traces from: {', '.join(missing)}")
    print(f"last {minutes} min: traces={counts['traces']} logs={counts['logs']} metric points={counts['metrics']}")
    print(terminal_text(f"services with traces ({len(services)}): {', '.join(services) or '-'}"))
    if problems:
        for p in problems:
            print(f"FAIL: {p}", file=sys.stderr)
        return 1
    print("OK: telemetry flows into otel-ai")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("otel-demo", help="run the official OpenTelemetry Demo with otel-ai as its backend")
    verbs = p.add_subparsers(dest="demo_command", metavar="ACTION", required=True)

    def with_dir(v: argparse.ArgumentParser) -> None:
        v.add_argument("--dir", default=DEFAULT_DIR, help=f"demo checkout (default ./{DEFAULT_DIR})")

    s = verbs.add_parser("setup", help=f"clone the OpenTelemetry Demo ({DEMO_REF})")
    with_dir(s)
    s.add_argument("--ref", default=DEMO_REF, help=f"demo release tag (default {DEMO_REF})")
    s.add_argument("--repo", default=DEMO_REPO, help="demo git repository")
    s.set_defaults(func=_guarded(cmd_setup))
    for name, help_text in (("up", "build otel-ai and start the demo with it"), ("down", "stop the demo"),
                            ("status", "list the demo's containers")):
        v = verbs.add_parser(name, help=help_text)
        with_dir(v)
        v.add_argument("--minimal", action="store_true", help="use the demo's docker-compose.minimal.yml")
        if name == "down":
            v.add_argument("--volumes", action="store_true", help="also delete the demo's volumes")
        v.set_defaults(func=_guarded(cmd_compose))
    v = verbs.add_parser("validate", help="check that the demo's traces, logs and metrics reach otel-ai")
    v.add_argument("--server", default="http://localhost:8000", help="otel-ai HTTP API (default %(default)s)")
    add_data_option(v)
    v.add_argument("--minutes", type=int, default=10, help="look-back window (default 10)")
    v.add_argument("--min-services", type=int, default=len(DEMO_SERVICES),
                   help=f"minimum services with traces (default {len(DEMO_SERVICES)})")
    v.add_argument("--expect-service", action="append",
                   help=f"a service that must have traces (repeatable; e.g. {', '.join(DEMO_SERVICES[:2])})")
    v.set_defaults(func=_guarded(cmd_validate))


def _guarded(func: Any) -> Any:  # noqa: ANN401
    """Turn missing preconditions into one clear line and exit code 2."""

    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except DemoError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2

    return run
