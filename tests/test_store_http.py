"""The HTTP path of store/: URL parsing, and clickhouse-connect's HTTP client against a ClickHouse HTTP
endpoint served by chDB in a subprocess (tests/fixtures/clickhouse_http.py): auth, database, settings,
TLS options, errors, migrations and the db CLI."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from otel_ai.settings import Settings
from store import Store, StoreError, parse_url
from store.migrations import discover, migrate, status
from tests.fixtures.clickhouse_http import (
    ClickHouseHTTP,
    make_client_cert,
    make_self_signed,
    start_clickhouse_http,
)


@pytest.fixture(scope="module")
def ch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseHTTP]:
    server = start_clickhouse_http(tmp_path_factory.mktemp("chhttp"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ch_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ClickHouseHTTP, Path]]:
    d = tmp_path_factory.mktemp("chhttps")
    cert, key = make_self_signed(d)
    server = start_clickhouse_http(d / "data", tls=(cert, key))
    yield server, cert
    server.stop()


# -- URL parsing ------------------------------------------------------------------------------------

def test_parse_chdb_url_resolves_directory(tmp_path: Path) -> None:
    u = parse_url(f"chdb://{tmp_path}/d")
    assert (u.engine, u.path) == ("chdb", str(tmp_path / "d"))
    assert parse_url("chdb://").path == str(Path("./data").resolve())


def test_parse_http_url_defaults_and_credentials() -> None:
    u = parse_url("http://ch.example:8124")
    assert (u.engine, u.host, u.port, u.username, u.password, u.database, u.secure, u.verify) == (
        "http", "ch.example", 8124, "default", "", None, False, True)
    u = parse_url("http://reader:p%40ss%3Aword@ch.example/otel_prod")
    assert (u.port, u.username, u.password, u.database) == (8123, "reader", "p@ss:word", "otel_prod")
    assert "p@ss" not in u.redacted() and u.redacted() == "http://reader:***@ch.example:8123/otel_prod"


def test_parse_https_and_tls_options() -> None:
    u = parse_url("https://u:p@ch.example/db?verify=false&ca_cert=/etc/ca.pem")
    assert (u.secure, u.port, u.verify, u.ca_cert) == (True, 8443, False, "/etc/ca.pem")
    u = parse_url("http://u:p@ch.example:9440/?secure=true&client_cert=/c.pem&client_cert_key=/k.pem&database=x")
    assert (u.secure, u.port, u.client_cert, u.client_cert_key, u.database) == (True, 9440, "/c.pem", "/k.pem", "x")
    assert u.redacted().startswith("https://")


def test_parse_passes_other_query_options_as_settings() -> None:
    u = parse_url("http://ch.example/otel?max_execution_time=30&distributed_foreground_insert=1&verify=1")
    assert u.settings == {"max_execution_time": "30", "distributed_foreground_insert": "1"}


@pytest.mark.parametrize("url, message", [
    ("postgres://u:secret@db/x", "unsupported ClickHouse URL scheme 'postgres'"),
    ("http:///otel", "names no host"),
    ("http://ch.example:notaport/otel", "bad port"),
])
def test_parse_errors_are_clear_and_hide_passwords(url: str, message: str) -> None:
    with pytest.raises(StoreError, match=message) as err:
        parse_url(url)
    assert "secret" not in str(err.value)


# -- against the chDB-backed HTTP endpoint ----------------------------------------------------------

def test_connect_runs_real_queries_through_http(ch: ClickHouseHTTP) -> None:
    store = Store.connect(ch.url("otel_http"))
    try:
        assert not store.is_embedded and store.database == "otel_http"
        assert store.query("SELECT currentDatabase(), 1 + {x:UInt8}", parameters={"x": 41}).rows == [
            ("otel_http", 42)]
        store.command("CREATE TABLE IF NOT EXISTS kv (k String, m Map(LowCardinality(String), String), "
                      "t DateTime64(9)) ENGINE = MergeTree ORDER BY k")
        t = datetime(2026, 3, 4, 5, 6, 7, 123456, tzinfo=UTC)
        assert store.insert("kv", ["k", "m", "t"], [["a", "b"], [{"x": "1"}, {}], [t, t]]) == 2
        rows = store.query("SELECT k, m, t FROM kv ORDER BY k").rows
        assert [(k, m, ts.replace(tzinfo=UTC)) for k, m, ts in rows] == [("a", {"x": "1"}, t), ("b", {}, t)]
        assert "kv" in store.tables()
    finally:
        store.close()


def test_migrations_over_http_create_the_schema(ch: ClickHouseHTTP) -> None:
    url = ch.url("otel_mig")
    store = Store.connect(url)
    try:
        settings = Settings(clickhouse_url=url)
        assert migrate(store, settings) == [f"{m.version:03d}" for m in discover()]
        before = len(ch.queries())
        assert migrate(store, settings) == []
        assert not [q["sql"] for q in ch.queries()[before:] if not q["sql"].lstrip().upper().startswith("SELECT")]
        assert {s.state for s in status(store)} == {"applied"}
        assert {"otel_traces", "otel_logs", "otel_metrics_sum", "otel_traces_trace_id_ts_mv"} <= set(store.tables())
        now = datetime.now(UTC)
        store.insert("otel_traces", ["Timestamp", "TraceId", "SpanId", "ServiceName"],
                     [[now], ["ab" * 16], ["cd" * 8], ["checkout"]])
        assert store.query("SELECT TraceId FROM otel_traces_trace_id_ts").rows == [("ab" * 16,)]
    finally:
        store.close()


def test_database_from_url_unless_set_explicitly(ch: ClickHouseHTTP) -> None:
    url = ch.url("from_url")
    for settings, expected in ((Settings(clickhouse_url=url), "from_url"),
                               (Settings(clickhouse_url=url, database="explicit"), "explicit"),
                               (Settings(clickhouse_url=ch.url("")), "otel")):
        store = Store.from_settings(settings)
        try:
            assert store.database == expected and store.query("SELECT currentDatabase()").scalar() == expected
        finally:
            store.close()


def test_connecting_to_an_existing_database_needs_no_create_privilege(ch: ClickHouseHTTP) -> None:
    Store.connect(ch.url("otel_existing")).close()
    before = len(ch.queries())
    store = Store.connect(ch.url("otel_existing"))
    try:
        assert store.query("SELECT 1").scalar() == 1
    finally:
        store.close()
    issued = [q["sql"] for q in ch.queries()[before:]]
    assert issued and not any("CREATE" in sql.upper() for sql in issued)  # a SELECT-only account can connect


def test_agent_sql_tool_runs_read_only_over_http(ch: ClickHouseHTTP) -> None:
    from tools.sql import QUERY_SETTINGS, run_sql

    store = Store.connect(ch.url("otel_tools"))
    try:
        migrate(store, Settings(clickhouse_url=ch.url("otel_tools")))
        store.insert("otel_traces", ["Timestamp", "TraceId", "ServiceName"],
                     [[datetime.now(UTC)], ["ef" * 16], ["cart"]])
        result = run_sql(store, "SELECT ServiceName, count() AS n FROM otel_traces GROUP BY ServiceName")
        assert result.ok, result.error
        assert result.rows == [{"ServiceName": "cart", "n": 1}]
        sent = ch.queries()[-1]
        assert sent["settings"]["readonly"] == "1" and "otel_traces" in sent["sql"]
        with pytest.raises(Exception, match="READONLY|readonly"):  # the engine enforces it, not only the guard
            store.command("INSERT INTO otel_traces (ServiceName) VALUES ('x')", settings=QUERY_SETTINGS)
    finally:
        store.close()


def test_wrong_credentials_give_a_clear_store_error(ch: ClickHouseHTTP) -> None:
    with pytest.raises(StoreError) as err:
        Store.connect(ch.url("otel", password="wrong-password"))
    msg = str(err.value)
    assert "Authentication failed" in msg and f"127.0.0.1:{ch.port}" in msg
    assert "wrong-password" not in msg and "***" in msg
    with pytest.raises(StoreError, match="Authentication failed"):
        Store.connect(ch.url("otel", user="nobody"))


def test_settings_in_the_url_reach_the_server(ch: ClickHouseHTTP) -> None:
    Store.connect(ch.url("otel_ro")).close()
    store = Store.connect(ch.url("otel_ro", query="readonly=1"), create=False)
    try:
        assert store.query("SELECT getSetting('readonly')").scalar() == 1
        with pytest.raises(Exception, match="readonly|READONLY"):
            store.command("CREATE TABLE t (x UInt8) ENGINE = MergeTree ORDER BY x")
    finally:
        store.close()


def test_unreachable_server_is_a_store_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(StoreError, match=rf"cannot open ClickHouse at http://u:\*\*\*@127.0.0.1:{port}/otel"):
        Store.connect(f"http://u:pw@127.0.0.1:{port}/otel")


def test_tls_with_ca_cert_verifies_the_server(ch_tls: tuple[ClickHouseHTTP, Path]) -> None:
    server, cert = ch_tls
    store = Store.connect(server.url("otel_tls", query=f"ca_cert={cert}"))
    try:
        assert store.url.secure and store.query("SELECT 7").scalar() == 7
    finally:
        store.close()


def test_tls_without_trust_is_refused_unless_verify_false(ch_tls: tuple[ClickHouseHTTP, Path]) -> None:
    server, _ = ch_tls
    with pytest.raises(StoreError, match="(?i)certificate verify failed"):
        Store.connect(server.url("otel_tls"))
    store = Store.connect(server.url("otel_tls", query="verify=false"))
    try:
        assert store.query("SELECT 8").scalar() == 8
    finally:
        store.close()
    with pytest.raises(StoreError, match="cannot open ClickHouse"):
        Store.connect(server.url("otel_tls").replace("https://", "http://"))


def test_mutual_tls_certificate_login_and_proxy_mode(tmp_path: Path) -> None:
    cert, key = make_self_signed(tmp_path)
    client_cert, client_key = make_client_cert(cert, key, tmp_path)  # CN otel-ai
    server = start_clickhouse_http(tmp_path / "data", tls=(cert, key), client_ca=cert, cert_cn="otel-ai")
    tls = f"ca_cert={cert}&client_cert={client_cert}&client_cert_key={client_key}"
    try:
        with pytest.raises(StoreError, match="cannot open ClickHouse at https://"):  # no client certificate
            Store.connect(server.url("otel_mtls", query=f"ca_cert={cert}"))
        # default (tls_mode=mutual): ClickHouse certificate login, the password is not used
        for query in (tls, f"{tls}&tls_mode=proxy"):  # proxy: mutual TLS transport, password login
            store = Store.connect(server.url("otel_mtls", password="" if "proxy" not in query else None,
                                             query=query))
            try:
                assert store.query("SELECT 9").scalar() == 9
            finally:
                store.close()
        with pytest.raises(StoreError, match="Authentication failed"):  # the certificate is not this user's
            Store.connect(server.url("otel_mtls", user="someone_else", password="", query=tls))
        with pytest.raises(StoreError, match="tls_mode must be one of mutual, proxy, strict"):
            Store.connect(server.url("otel_mtls", query=f"{tls}&tls_mode=bogus"))
    finally:
        server.stop()


def test_db_cli_against_http_endpoint(ch: ClickHouseHTTP, tmp_path: Path) -> None:
    env = {**os.environ, "OTEL_AI_CONFIG": str(tmp_path / "none.toml")}
    base = [sys.executable, "-m", "otel_ai", "db"]
    url = ch.url("otel_cli")
    done = subprocess.run([*base, "migrate", "--clickhouse-url", url], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("applied: 001, 002, 003")
    st = subprocess.run([*base, "status", "--clickhouse-url", url], capture_output=True, text=True, env=env,
                        timeout=120)
    assert st.returncode == 0 and "otel_traces" in st.stdout and ch.password not in st.stdout
    bad = subprocess.run([*base, "status", "--clickhouse-url", ch.url("otel_cli", password="nope")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 1 and "Authentication failed" in bad.stderr and "nope" not in bad.stderr


def test_replicas_migrating_at_once_agree(ch: ClickHouseHTTP, tmp_path: Path) -> None:
    """`docker compose up --scale otel-ai=3` starts three serves that migrate the same server together."""
    env = {**os.environ, "OTEL_AI_CONFIG": str(tmp_path / "none.toml")}
    url = ch.url("otel_scaled")
    procs = [subprocess.Popen([sys.executable, "-m", "otel_ai", "db", "migrate", "--clickhouse-url", url],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(3)]
    results = [(p.wait(180), p.stderr.read() if p.stderr else "") for p in procs]
    assert [code for code, _ in results] == [0, 0, 0], results
    store = Store.connect(url, create=False)
    try:
        assert [s.state for s in status(store)] == ["applied"] * len(discover())
        assert migrate(store, Settings(clickhouse_url=url)) == []
    finally:
        store.close()
