"""The embedded path of store/: one process per chDB directory, with a clear error for the second one."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

HOLD = """
import sys, time
from store import Store
store = Store.connect("chdb://" + sys.argv[1], "otel")
print("holding", flush=True)
time.sleep(120)
"""
TRY = """
import sys
from store import Store, StoreError
try:
    Store.connect("chdb://" + sys.argv[1], "otel")
except StoreError as exc:
    print(exc)
    sys.exit(3)
print("opened")
"""


def _python(code: str, *args: str, **kw: object) -> subprocess.Popen:
    env = {**os.environ, "OTEL_AI_CONFIG": "/nonexistent.toml"}
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, **kw)  # type: ignore[call-overload]


def test_second_process_on_a_directory_gets_a_clear_error(tmp_path: Path) -> None:
    data = tmp_path / "data"
    holder = _python(HOLD, str(data))
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        second = _python(TRY, str(data))
        out, err = second.communicate(timeout=120)
        assert second.returncode == 3, out + err
        assert out.startswith(f"cannot open ClickHouse at chdb://{data.resolve()}: the data directory "
                              f"{data.resolve()} is in use by another otel-ai process")
        assert "talk to that server with --server, or stop it" in out
    finally:
        holder.kill()
        holder.wait(30)
    deadline = time.monotonic() + 30
    while True:  # once the holder is gone the directory opens again
        again = _python(TRY, str(data))
        out, err = again.communicate(timeout=120)
        if again.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert again.returncode == 0 and out.strip() == "opened", out + err


def test_embedded_handles_do_not_compile_queries_with_llvm(root_store) -> None:
    """Every embedded handle, pooled clones included, runs with ClickHouse's expression, aggregation and sort
    compilation off (store.client.EMBEDDED_SETTINGS): it cost the first answers after start up to 1 s."""
    from store.client import EMBEDDED_SETTINGS, StorePool

    pool = StorePool(root_store, 1)
    handle = pool.acquire(5)
    for store in (root_store, handle):
        for name in EMBEDDED_SETTINGS:
            assert store.query(f"SELECT getSetting('{name}')").scalar() in (0, False), name
    pool.release(handle)
    pool.close()
