"""`otel-ai ask` (local store, or a running serve that holds the data), `POST /api/ask` and
`otel-ai models` as a user runs them: real subprocesses, real serve, a fake Ollama."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from agent import Answer
from tests.fakes.llm import FakeOllamaServer

ROOT = Path(__file__).resolve().parents[1]
PREPARE = """
import sys
from otel_ai.settings import Settings
from store import Store
from store.migrations import migrate
from tests.fixtures.agent_data import synth_incident
settings = Settings(clickhouse_url="chdb://" + sys.argv[1])
store = Store.from_settings(settings)
migrate(store, settings)
synth_incident(store, "billing_slow", seed=4)
store.close()
"""


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHONPATH": str(ROOT), "OTEL_AI_CONFIG": "/nonexistent.toml", **(env or {})}
    return subprocess.run([sys.executable, "-m", "otel_ai", *args], capture_output=True, text=True, env=full,
                          timeout=timeout, cwd=ROOT)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("askdata")
    subprocess.run([sys.executable, "-c", PREPARE, str(d)], check=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
                   cwd=ROOT, timeout=180)
    return d


def test_ask_cli_on_the_embedded_store(data_dir):
    done = cli("ask", "why is edge-gateway slow?", "--json", "--data", str(data_dir))
    assert done.returncode == 0, done.stderr
    answer = Answer.model_validate(json.loads(done.stdout))
    assert answer.root_causes[0].service == "billing" and answer.model == "builtin"
    text = cli("ask", "why is edge-gateway slow?", "--data", str(data_dir))
    assert text.returncode == 0 and "Root causes:\n  1. billing / billing.Billing/Charge  [latency" in text.stdout
    bad = cli("ask", "why?", "--since", "soon", "--data", str(data_dir))
    assert bad.returncode == 2 and "bad duration 'soon'" in bad.stderr
    nokey = cli("ask", "why?", "--model", "openai:gpt-4o-mini", "--data", str(data_dir), env={"OPENAI_API_KEY": ""})
    assert nokey.returncode == 1 and "OPENAI_API_KEY" in nokey.stderr


def test_ask_goes_to_the_server_holding_the_data(data_dir, server_factory):
    srv = server_factory(data_dir=data_dir)
    env = {"OTEL_AI_PORT": str(srv.port)}
    # the directory is locked by serve: this only works because the CLI finds the server and asks it
    done = cli("ask", "why is edge-gateway slow?", "--json", "--data", str(data_dir), env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["root_causes"][0]["service"] == "billing"
    explicit = cli("ask", "what is wrong?", "--json", "--server", srv.http_url)
    assert explicit.returncode == 0 and json.loads(explicit.stdout)["root_causes"][0]["service"] == "billing"

    url = f"{srv.http_url}/api/ask"
    first = httpx.post(url, json={"question": "why is edge-gateway slow?", "conversation_id": "c1"}, timeout=120)
    assert first.status_code == 200
    body = first.json()
    assert set(body) == set(Answer.model_fields) and body["evidence"][0]["sql"]
    follow = httpx.post(url, json={"question": "and orders?", "conversation_id": "c1"}, timeout=120).json()
    assert follow["answer"].startswith("**orders** is affected because **billing**")
    assert httpx.post(url, json={"question": "   "}, timeout=30).status_code == 400
    assert httpx.post(url, json={}, timeout=30).status_code == 422
    bad_model = httpx.post(url, json={"question": "why?", "model": "gemini:pro"}, timeout=30)
    assert bad_model.status_code == 400 and "unknown model provider" in bad_model.json()["error"]
    assert httpx.post(url, json={"question": "why?", "since": "x"}, timeout=30).status_code == 400


def test_models_command_lists_pulls_and_checks(tmp_path):
    with FakeOllamaServer(models=["llama3.2:latest"], pullable=["qwen2.5:0.5b"]) as fake:
        env = {"OLLAMA_BASE_URL": fake.url, "OTEL_AI_MODEL": "ollama:qwen2.5:0.5b,builtin"}
        listed = cli("models", "--json", env=env)
        assert listed.returncode == 0, listed.stderr
        report = json.loads(listed.stdout)
        assert report["ollama"]["ok"] and report["ollama"]["models"] == ["llama3.2:latest"]
        assert "not pulled" in report["problems"]["planner"]
        assert cli("models", "check", env=env).returncode == 1
        pulled = cli("models", "pull", "qwen2.5:0.5b", env=env)
        assert pulled.returncode == 0 and "success" in pulled.stdout
        assert cli("models", "check", env=env).returncode == 0
        missing = cli("models", "pull", "nope", env=env)
        assert missing.returncode == 1 and "does not exist" in missing.stderr
