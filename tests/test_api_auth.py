"""Issue 17 item 3: with API tokens and chat users configured, every `/api/*` and `/chat-files/*`
request needs a token or a logged-in chat session (401 otherwise), `/healthz` stays open and says only
whether the server is up, and `POST /api/ask` takes only the configured models. A real serve."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.fixtures.server import ServerProcess

TOKENS = ("tok-alpha-0123456789abcdef", "tok-beta-0123456789abcdef")
SECRET = "s" * 32
# Every /api/* route serve has, with a request that succeeds when authorized. The test compares this
# with the routes declared in the source, so a new route cannot skip the check unnoticed.
ROUTES = {
    "/api/sql": ("POST", {"json": {"sql": "SELECT count() AS n FROM otel_traces"}}),
    "/api/ask": ("POST", {"json": {"question": "which services are failing?", "model": "builtin"}}),
    "/api/anomalies": ("GET", {"params": {"since": "30m"}}),
}


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    from tests.fixtures.server import make_server

    d = tmp_path_factory.mktemp("secured")
    srv = make_server(d / "data", d / "serve.log", env={
        "OTEL_AI_API_TOKEN": ",".join(TOKENS), "OTEL_AI_AUTH_USERS": "ann:pw-ann,bob:pw-bob",
        "OTEL_AI_AUTH_SECRET": SECRET, "OTEL_AI_ANOMALY_ENABLED": "false"})
    (d / "data").mkdir()
    srv.start()
    yield srv
    srv.stop()


def call(srv: ServerProcess, path: str, **kw: object) -> httpx.Response:
    method, request = ROUTES[path]
    return httpx.request(method, srv.http_url + path, timeout=120, **request, **kw)  # type: ignore[arg-type]


def login(srv: ServerProcess, user: str, password: str) -> httpx.Cookies:
    r = httpx.post(f"{srv.http_url}/login", data={"username": user, "password": password}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.cookies.get("access_token")
    return r.cookies


def test_every_api_route_is_listed_here() -> None:
    root = Path(__file__).resolve().parent.parent
    declared = set()
    for path in root.glob("*/**/*.py"):
        if path.parts[len(root.parts)] not in ("tests", ".venv"):
            declared |= set(re.findall(r'@app\.(?:get|post|put|patch|delete|api_route)\(\s*"(/api/[^"]*)"',
                                       path.read_text(encoding="utf-8")))
    assert declared == set(ROUTES)


@pytest.mark.parametrize("path", sorted(ROUTES))
def test_api_route_needs_a_token_or_a_session(secured: ServerProcess, path: str) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": "Basic YW5uOnB3LWFubg=="},
                    {"Authorization": f"Bearer {TOKENS[0]}x"}, {"Authorization": "Bearer"}):
        denied = call(secured, path, headers=headers)
        assert denied.status_code == 401, (headers, denied.text)
        assert "authentication required" in denied.json()["error"]
        assert denied.headers["www-authenticate"].startswith("Bearer")
    for token in TOKENS:
        ok = call(secured, path, headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200, ok.text
    session = call(secured, path, cookies=login(secured, "bob", "pw-bob"))
    assert session.status_code == 200, session.text
    forged = httpx.Cookies({"access_token": "eyJhbGciOiJIUzI1NiJ9.eyJpZGVudGlmaWVyIjoiYW5uIn0.x"})
    assert call(secured, path, cookies=forged).status_code == 401


def test_chat_files_need_a_session(secured: ServerProcess) -> None:
    url = f"{secured.http_url}/chat-files/th-unknown/el-unknown"
    assert httpx.get(url, timeout=30).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer nope-0123456789abcdef"}, timeout=30).status_code == 401
    # a logged-in user passes the gate and gets the route's own answer (no such thread: not 401)
    assert httpx.get(url, cookies=login(secured, "ann", "pw-ann"), timeout=30).status_code != 401


def test_wrong_password_gets_no_session(secured: ServerProcess) -> None:
    r = httpx.post(f"{secured.http_url}/login", data={"username": "ann", "password": "nope"}, timeout=30)
    assert r.status_code == 401 and not r.cookies.get("access_token")


def test_healthz_is_open_and_says_nothing_sensitive(secured: ServerProcess) -> None:
    anonymous = httpx.get(f"{secured.http_url}/healthz", timeout=10)
    assert anonymous.status_code == 200
    assert set(anonymous.json()) == {"status", "services"} and anonymous.json()["status"] == "ok"
    assert str(secured.data_dir.resolve()) not in anonymous.text
    full = httpx.get(f"{secured.http_url}/healthz", headers={"Authorization": f"Bearer {TOKENS[1]}"}, timeout=10)
    assert full.json()["store"] == f"chdb://{secured.data_dir.resolve()}" and "ingest" in full.json()


def test_ask_takes_only_configured_models(secured: ServerProcess) -> None:
    url = f"{secured.http_url}/api/ask"
    auth = {"Authorization": f"Bearer {TOKENS[0]}"}
    other = httpx.post(url, json={"question": "why?", "model": "openai:gpt-4o"}, headers=auth, timeout=60)
    assert other.status_code == 400
    assert other.json()["error"] == "model 'openai:gpt-4o' is not configured on this server: choose one of builtin"
    malformed = httpx.post(url, json={"question": "why?", "model": "gemini:pro"}, headers=auth, timeout=60)
    assert malformed.status_code == 400 and "unknown model provider" in malformed.json()["error"]


def test_cli_sends_the_configured_token(secured: ServerProcess) -> None:
    def sql(token: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "OTEL_AI_API_TOKEN": token, "OTEL_AI_CONFIG": "/nonexistent.toml"}
        return subprocess.run([sys.executable, "-m", "otel_ai", "sql", "SELECT 1 AS one", "--server",
                               secured.http_url, "--json"], capture_output=True, text=True, timeout=120, env=env)

    assert sql(TOKENS[1]).returncode == 0
    refused = sql("not-the-token-0123456789")
    assert refused.returncode != 0 and "authentication required" in refused.stderr


def test_short_api_token_is_a_config_error(tmp_path) -> None:  # noqa: ANN001
    env = {**os.environ, "OTEL_AI_API_TOKEN": "short", "OTEL_AI_CONFIG": str(tmp_path / "none.toml")}
    done = subprocess.run([sys.executable, "-m", "otel_ai", "serve", "--data", str(tmp_path / "d"), "--port", "0"],
                          capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode != 0 and "OTEL_AI_API_TOKEN must be at least 16 characters" in done.stderr
