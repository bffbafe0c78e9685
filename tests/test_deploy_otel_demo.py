"""`otel-ai otel-demo`: clear errors without Docker, the exact `docker compose` invocation, cloning the
demo, and `validate` on real telemetry sent by the OpenTelemetry SDK through a real `otel-ai serve`.

No Docker engine runs here: `up/down/status` are checked against a recording `docker` executable on
PATH (the real command would do the same subprocess call); the compose files themselves are checked in
test_deploy_files.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.otlp_send import send_telemetry

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str, path: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OTEL_AI_CONFIG": "/nonexistent/otel-ai.toml"}
    if path is not None:
        env["PATH"] = path
    return subprocess.run([sys.executable, "-m", "otel_ai", "otel-demo", *args], capture_output=True, text=True,
                          env=env, cwd=cwd or ROOT, timeout=120)


def _fake_docker(bin_dir: Path, log: Path, info_rc: int = 0) -> None:
    """A `docker` that records argv and the variables compose would read, then succeeds."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / "docker"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        f"if sys.argv[1:2] == ['info']:\n    print('Cannot connect to the Docker daemon', file=sys.stderr)\n"
        f"    sys.exit({info_rc})\n"
        "if sys.argv[1:3] == ['compose', 'version']:\n    print('Docker Compose version v2.40.0'); sys.exit(0)\n"
        f"with open({str(log)!r}, 'a') as f:\n"
        "    f.write(json.dumps({'argv': sys.argv[1:], 'env': {k: v for k, v in os.environ.items()"
        " if k.startswith(('OTEL_AI_', 'OTEL_COLLECTOR'))}}) + '\\n')\n"
    )
    script.chmod(0o755)


def _demo_checkout(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "docker-compose.yml").write_text("services: {}\n")
    (path / "docker-compose.minimal.yml").write_text("services: {}\n")
    (path / ".env").write_text("IMAGE_VERSION=2.0.2\n")
    return path


def test_up_without_docker_says_what_to_install(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    out = _cli("up", "--dir", str(_demo_checkout(tmp_path / "demo")), path=str(empty))
    assert out.returncode == 2
    assert "docker was not found on PATH" in out.stderr and "compose plugin" in out.stderr


def test_up_with_docker_engine_down_is_a_clear_error(tmp_path: Path) -> None:
    _fake_docker(tmp_path / "bin", tmp_path / "calls.jsonl", info_rc=1)
    out = _cli("status", "--dir", str(_demo_checkout(tmp_path / "demo")), path=str(tmp_path / "bin"))
    assert out.returncode == 2
    assert "Docker engine is not reachable" in out.stderr and "Cannot connect to the Docker daemon" in out.stderr
    assert not (tmp_path / "calls.jsonl").exists()


def test_up_down_status_run_compose_with_the_override(tmp_path: Path) -> None:
    calls = tmp_path / "calls.jsonl"
    _fake_docker(tmp_path / "bin", calls)
    demo = _demo_checkout(tmp_path / "demo")
    for args in (["up"], ["up", "--minimal"], ["status"], ["down", "--volumes"]):
        out = _cli(*args, "--dir", str(demo), path=str(tmp_path / "bin"))
        assert out.returncode == 0, out.stderr
    recorded = [json.loads(line) for line in calls.read_text().splitlines()]
    override = ROOT / "deploy" / "otel-demo" / "compose.override.yaml"
    head = ["compose", "--project-directory", str(demo), "-f"]
    tail = ["-f", str(override), "--env-file", str(demo / ".env")]
    assert [c["argv"] for c in recorded] == [
        [*head, str(demo / "docker-compose.yml"), *tail, "up", "-d", "--build"],
        [*head, str(demo / "docker-compose.minimal.yml"), *tail, "up", "-d", "--build"],
        [*head, str(demo / "docker-compose.yml"), *tail, "ps"],
        [*head, str(demo / "docker-compose.yml"), *tail, "down", "--volumes"],
    ]
    env = recorded[0]["env"]
    assert env["OTEL_AI_SOURCE"] == str(ROOT) and (Path(env["OTEL_AI_SOURCE"]) / "Dockerfile").is_file()
    assert env["OTEL_AI_DEMO_EXTRAS"] == env["OTEL_COLLECTOR_CONFIG_EXTRAS"]
    assert Path(env["OTEL_AI_DEMO_EXTRAS"]).is_file()


def test_up_before_setup_points_to_setup(tmp_path: Path) -> None:
    _fake_docker(tmp_path / "bin", tmp_path / "calls.jsonl")
    out = _cli("up", "--dir", str(tmp_path / "nowhere"), path=str(tmp_path / "bin"))
    assert out.returncode == 2 and "otel-ai otel-demo setup" in out.stderr


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_setup_clones_the_pinned_release(tmp_path: Path) -> None:
    upstream = tmp_path / "upstream"
    _demo_checkout(upstream)
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", "-C", str(upstream)]
    for cmd in (["init", "-q"], ["add", "."], ["commit", "-qm", "demo"], ["tag", "9.9.9"]):
        subprocess.run([*git, *cmd], check=True, capture_output=True)
    target = tmp_path / "checkout"
    out = _cli("setup", "--dir", str(target), "--repo", str(upstream), "--ref", "9.9.9")
    assert out.returncode == 0, out.stderr
    assert (target / "docker-compose.yml").is_file() and "otel-demo up" in out.stdout
    again = _cli("setup", "--dir", str(target), "--repo", str(upstream), "--ref", "9.9.9")
    assert again.returncode == 0 and "already" in again.stdout
    missing = _cli("setup", "--dir", str(tmp_path / "other"), "--repo", str(upstream), "--ref", "no-such-tag")
    assert missing.returncode != 0


def test_validate_checks_that_every_signal_arrived(server_factory, tmp_path: Path) -> None:
    srv = server_factory()
    send_telemetry(srv.otlp_grpc_endpoint, ["frontend", "checkout"])
    via_api = _cli("validate", "--server", srv.http_url, "--min-services", "2", "--expect-service", "frontend")
    assert via_api.returncode == 0, via_api.stdout + via_api.stderr
    assert srv.stop() == 0
    data = str(srv.data_dir)
    ok = _cli("validate", "--data", data, "--min-services", "2", "--expect-service", "frontend")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "traces=2 logs=2 metric points=2" in ok.stdout and "checkout, frontend" in ok.stdout
    assert via_api.stdout == ok.stdout  # the HTTP API (SQL guard) and the store agree
    short = _cli("validate", "--data", data, "--expect-service", "payment")
    assert short.returncode == 1
    assert "2 services sent traces, expected at least 5" in short.stderr and "no traces from: payment" in short.stderr


def test_validate_on_an_empty_store_fails_per_signal(tmp_path: Path) -> None:
    data = str(tmp_path / "empty")
    unmigrated = _cli("validate", "--data", data)
    assert unmigrated.returncode == 2 and "not an otel-ai store yet" in unmigrated.stderr
    env = {**os.environ, "OTEL_AI_CONFIG": "/nonexistent/otel-ai.toml"}
    subprocess.run([sys.executable, "-m", "otel_ai", "db", "migrate", "--data", data], check=True, env=env,
                   capture_output=True, timeout=120)
    out = _cli("validate", "--data", data, "--min-services", "0")
    assert out.returncode == 1
    for signal in ("traces", "logs", "metrics"):
        assert f"no {signal} in the last 10 minutes" in out.stderr


def test_validate_without_a_server_is_a_clear_error(tmp_path: Path) -> None:
    out = _cli("validate", "--server", "http://127.0.0.1:9")
    assert out.returncode == 2 and "otel-ai is not reachable at http://127.0.0.1:9" in out.stderr
