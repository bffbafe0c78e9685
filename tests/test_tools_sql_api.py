"""`POST /api/sql` on a real serve and `otel-ai sql` (via --server, via a server holding the data
directory, and locally): the same guard everywhere, refusals exit non-zero with the reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx

from tests.fixtures.server import ServerProcess


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "otel_ai", "sql", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})})


def test_api_and_cli(server: ServerProcess) -> None:
    url = f"{server.http_url}/api/sql"
    ok = httpx.post(url, json={"sql": "SELECT count() AS n, 'file(' AS s FROM otel_traces"}, timeout=30)
    assert ok.status_code == 200, ok.text
    body = ok.json()
    assert body["columns"] == ["n", "s"] and body["rows"] == [{"n": 0, "s": "file("}]
    assert body["sql"].endswith("LIMIT 200")

    refused = httpx.post(url, json={"sql": "SELECT * FROM file('/etc/passwd', 'LineAsString')"}, timeout=30)
    assert refused.status_code == 400 and "file" in refused.json()["error"]
    multi = httpx.post(url, json={"sql": "SELECT 1; DROP TABLE otel_traces"}, timeout=30)
    assert multi.status_code == 400 and "one statement" in multi.json()["error"]
    failed = httpx.post(url, json={"sql": "SELECT NoSuchColumn FROM otel_traces"}, timeout=30)
    assert failed.status_code == 400 and "NoSuchColumn" in failed.json()["error"]
    for bad in (b"not json", b"{}", b'{"sql": 5}', b"[]"):
        r = httpx.post(url, content=bad, headers={"content-type": "application/json"}, timeout=30)
        assert r.status_code == 400 and "error" in r.json()

    good = cli("SELECT count() AS n FROM otel_traces", "--server", server.http_url, "--json")
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout.strip().splitlines()[-1])["rows"] == [{"n": 0}]
    bad = cli("SELECT * FROM system.users", "--server", server.http_url)
    assert bad.returncode == 1 and "refused" in bad.stderr and "system" in bad.stderr

    # the data directory is locked by the server: the CLI finds the server holding it and asks it
    held = cli("SELECT count() AS n FROM otel_logs", "--data", str(server.data_dir),
               env={**server.env, "OTEL_AI_PORT": str(server.port)})
    assert held.returncode == 0, held.stderr
    assert "n" in held.stdout and "(1 row)" in held.stdout

    server.stop()
    local = cli("SELECT count() AS n FROM otel_traces", "--data", str(server.data_dir), "--json", env=server.env)
    assert local.returncode == 0, local.stderr
    assert json.loads(local.stdout.strip().splitlines()[-1])["rows"] == [{"n": 0}]
    drop = cli("DROP TABLE otel_traces", "--data", str(server.data_dir), env=server.env)
    assert drop.returncode == 1 and "only SELECT" in drop.stderr
