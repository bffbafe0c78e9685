"""Every `otel-ai` command as a user types it while `otel-ai serve` holds the data directory (the
demo's situation): it finds the serve at the configured port and uses its API, or, for commands that
need the store itself, says who holds it; no tracebacks, no chDB lock dump, no library INFO lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.server import ServerProcess

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "cli-test-token-0123456789"


def otel_ai(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHONPATH": str(ROOT), "OTEL_AI_CONFIG": "/nonexistent.toml", **(env or {})}
    for key in ("OTEL_AI_API_TOKEN", "OLLAMA_BASE_URL", "OTEL_AI_OLLAMA_BASE_URL", "OPENAI_API_KEY",
                "ANTHROPIC_API_KEY", "OTEL_AI_MODEL", "OTEL_AI_CLICKHOUSE_URL"):
        if key not in (env or {}):
            full.pop(key, None)
    return subprocess.run([sys.executable, "-m", "otel_ai", *args], capture_output=True, text=True, env=full,
                          cwd=cwd, timeout=180)


def assert_quiet(done: subprocess.CompletedProcess) -> None:
    """What a user should never see on stderr."""
    for noise in ("Traceback", " INFO ", "Cannot lock file", "DB::Exception"):
        assert noise not in done.stderr, done.stderr


@pytest.fixture
def demo_like(server_factory, tmp_path: Path) -> tuple[ServerProcess, Path, dict[str, str]]:
    """A serve holding `<cwd>/data` (the default directory), and the env pointing the CLI at its port."""
    cwd = tmp_path / "work"
    srv = server_factory(data_dir=cwd / "data")
    return srv, cwd, {"OTEL_AI_PORT": str(srv.port)}


def test_commands_use_the_serve_that_holds_the_default_directory(demo_like) -> None:
    srv, cwd, env = demo_like
    listed = otel_ai("anomalies", "list", "--since", "30m", cwd=cwd, env=env)
    assert listed.returncode == 0 and listed.stdout.strip() == "no anomalies", listed.stderr
    assert listed.stderr == ""
    as_json = otel_ai("anomalies", "list", "--since", "30m", "--json", cwd=cwd, env=env)
    assert as_json.returncode == 0 and json.loads(as_json.stdout) == [] and as_json.stderr == ""

    sql = otel_ai("sql", "SELECT count() AS n FROM otel_traces", cwd=cwd, env=env)
    assert sql.returncode == 0 and sql.stdout.splitlines() == ["n", "-", "0", "(1 row)"], sql.stderr
    assert sql.stderr == ""
    refused = otel_ai("sql", "SELECT * FROM system.users", cwd=cwd, env=env)
    assert refused.returncode == 1 and refused.stderr.startswith("refused:") and "system" in refused.stderr
    assert_quiet(refused)

    asked = otel_ai("ask", "what is wrong?", "--json", cwd=cwd, env=env)
    assert asked.returncode == 0, asked.stderr
    assert json.loads(asked.stdout)["model"] == "builtin" and asked.stderr == ""

    # from another directory, with no store named, the serve's store is the one meant (not ./data there)
    other_cwd = cwd.parent / "elsewhere"
    other_cwd.mkdir()
    elsewhere = otel_ai("sql", "SELECT count() AS n FROM otel_traces", "--json", cwd=other_cwd, env=env)
    assert elsewhere.returncode == 0 and json.loads(elsewhere.stdout)["rows"] == [{"n": 0}], elsewhere.stderr
    assert list(other_cwd.iterdir()) == []  # no ./data made there
    # --data naming the same directory is the same store
    same = otel_ai("sql", "SELECT 1 AS one", "--json", "--data", str(srv.data_dir), cwd=ROOT, env=env)
    assert same.returncode == 0 and json.loads(same.stdout)["rows"] == [{"one": 1}] and same.stderr == ""

    for question in ("", "   "):  # one message, not the API's 422 dump for "" and another for blanks
        empty = otel_ai("ask", question, cwd=cwd, env=env)
        assert empty.returncode == 2 and empty.stdout == ""
        assert empty.stderr.strip().splitlines() == [
            'error: empty question: ask something, e.g. otel-ai ask "why is checkout slow?"']


def test_commands_that_need_the_store_name_the_serve_holding_it(demo_like) -> None:
    srv, cwd, env = demo_like
    for args, hint in ((["db", "status"], "stop that serve first"),
                       (["db", "migrate"], "stop that serve first"),
                       (["anomalies", "train"], "trains and scores by itself"),
                       (["eval", "export-feedback"], "stop that serve first")):
        done = otel_ai(*args, cwd=cwd, env=env)
        assert done.returncode == 1, (args, done.stderr)
        (line,) = done.stderr.strip().splitlines()
        assert line.startswith(f"error: `otel-ai {' '.join(args)}` opens the store itself, but the data directory "
                               f"{srv.data_dir.resolve()} is in use by the otel-ai serve at {srv.http_url}: ")
        assert hint in line
        assert_quiet(done)


def test_another_directory_is_opened_here_not_sent_to_the_serve(demo_like, tmp_path: Path) -> None:
    """The serve at the configured port holds another directory: its API is not this store's."""
    _, cwd, env = demo_like
    other = tmp_path / "other"
    migrated = otel_ai("db", "migrate", "--data", str(other), cwd=cwd, env=env)
    assert migrated.returncode == 0 and migrated.stdout.startswith("applied: "), migrated.stderr
    assert migrated.stderr == ""
    listed = otel_ai("anomalies", "list", "--data", str(other), cwd=cwd, env=env)
    assert listed.returncode == 0 and listed.stdout.strip() == "no anomalies" and listed.stderr == ""
    asked = otel_ai("ask", "what is wrong?", "--data", str(other), cwd=cwd, env=env)
    assert asked.returncode == 0 and "model: builtin" in asked.stdout and asked.stderr == ""  # answered here


def test_models_lists_unconfigured_providers_as_not_configured(tmp_path: Path) -> None:
    done = otel_ai("models", cwd=tmp_path)
    assert done.returncode == 0 and done.stderr == ""
    lines = done.stdout.splitlines()
    assert "ollama    not configured (set OLLAMA_BASE_URL, or route a role to ollama:<model>)" in lines
    assert "openai    not configured (set OPENAI_API_KEY)" in lines
    assert "unavailable" not in done.stdout
    report = json.loads(otel_ai("models", "--json", cwd=tmp_path, env={"ANTHROPIC_API_KEY": "sk-ant-x"}).stdout)
    assert report["providers"] == {"ollama": "not configured", "openai": "not configured", "anthropic": "configured"}
    assert report["ollama"]["configured"] is False and report["problems"] == {}


def test_the_cli_sends_the_api_token_from_its_settings(server_factory, tmp_path: Path) -> None:
    """A serve with API auth on names its store on /healthz and answers /api/* only with a token."""
    srv = server_factory(env={"OTEL_AI_API_TOKEN": f"{TOKEN},another-token-0123456789"})
    env = {"OTEL_AI_PORT": str(srv.port), "OTEL_AI_API_TOKEN": TOKEN}
    for args in (["sql", "SELECT count() AS n FROM otel_traces", "--json"], ["anomalies", "list", "--json"],
                 ["ask", "what is wrong?", "--json"]):
        # --data names the store, so the serve is used only if its /healthz named it: the probe sent the token
        done = otel_ai(*args, "--data", str(srv.data_dir), cwd=tmp_path, env=env)
        assert done.returncode == 0 and json.loads(done.stdout) is not None, (args, done.stderr)
        assert done.stderr == ""

    without = otel_ai("sql", "SELECT 1", cwd=tmp_path, env={"OTEL_AI_PORT": str(srv.port)})
    assert without.returncode == 1 and without.stdout == ""
    assert without.stderr.strip() == (f"error: authentication required by the otel-ai serve at {srv.http_url}: "
                                      "set OTEL_AI_API_TOKEN to one of its tokens")
    wrong = otel_ai("sql", "SELECT 1", "--server", srv.http_url, cwd=tmp_path,
                    env={"OTEL_AI_API_TOKEN": "wrong-token-0123456789"})
    assert wrong.returncode == 1 and "OTEL_AI_API_TOKEN is not one of its tokens" in wrong.stderr
    assert_quiet(wrong)
    held = otel_ai("db", "status", "--data", str(srv.data_dir), cwd=tmp_path, env={"OTEL_AI_PORT": str(srv.port)})
    assert held.returncode == 1 and f"probably the otel-ai serve at {srv.http_url}" in held.stderr
    assert "set OTEL_AI_API_TOKEN" in held.stderr
    assert_quiet(held)


def test_a_reader_that_stops_early_gets_no_traceback(tmp_path: Path) -> None:
    """`otel-ai models | head -1`: the pipe closes before the command writes."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OTEL_AI_CONFIG": "/nonexistent.toml"}
    proc = subprocess.Popen([sys.executable, "-m", "otel_ai", "models"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    stderr = proc.stderr.read()
    assert proc.wait(60) == 141 and stderr == ""
