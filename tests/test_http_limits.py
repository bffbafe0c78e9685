"""One request cannot make serve buffer an unbounded body: every body to the chat, `/api/*` and Chainlit's
own routes is capped (413 with the setting's name), declared or chunked, logged in or not, while OTLP on
the main port keeps ingest's larger limit; a body and, before it, a request head each have a deadline. A real
serve with API tokens and chat users."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import httpx
import pytest

from tests.fixtures.server import ServerProcess, make_server, store_spans_to_multiply

TOKEN = "tok-limits-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CAP = 256 * 1024
BODY_TIMEOUT = 3.0
HEADER_TIMEOUT = 2.0  # shorter than BODY_TIMEOUT: the slow-body test shows the head deadline ends with the head


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    d = tmp_path_factory.mktemp("limits")
    (d / "data").mkdir()
    srv = make_server(d / "data", d / "serve.log", env={
        "OTEL_AI_API_TOKEN": TOKEN, "OTEL_AI_AUTH_USERS": "ann:pw-ann", "OTEL_AI_AUTH_SECRET": "s" * 32,
        "OTEL_AI_ANOMALY_ENABLED": "false", "OTEL_AI_HTTP_MAX_REQUEST_BYTES": str(CAP),
        "OTEL_AI_HTTP_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
        "OTEL_AI_HTTP_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT)})
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def slow_spans(secured: ServerProcess) -> None:
    """The spans slow queries multiply, stored once for the module (the helper expects exactly 40)."""
    store_spans_to_multiply(secured.http_url, AUTH)


def assert_too_large(r: httpx.Response) -> None:
    assert r.status_code == 413, r.text[:300]
    assert r.json()["error"] == (f"request body over {CAP:,} bytes (OTEL_AI_HTTP_MAX_REQUEST_BYTES): "
                                 "send a smaller request")


def test_declared_huge_body_is_refused_before_it_is_sent(secured: ServerProcess) -> None:
    """Chainlit's /set-session-cookie needs no login and reads the whole JSON body: a declared 1 GB gets
    413 at once, without the server waiting for (or buffering) any of it."""
    with socket.create_connection(("127.0.0.1", secured.port), timeout=30) as sock:
        sock.sendall(b"POST /set-session-cookie HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000000000\r\n\r\n")
        head = sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 413"), head


def trickle_until_answered(port: int, head: bytes, first: bytes, within: float,
                           sock: socket.socket | None = None) -> tuple[bytes, float]:
    """Send `head` and `first`, then one more byte (a space) every 0.5 s (a slow client that never finishes)
    until the server answers; returns the whole answer (up to the server closing the connection) and the
    seconds its first bytes took. Waiting is on the socket (recv with a timeout), so the server's answer
    is seen as soon as it arrives. On `sock` if given (a connection that already served a request)."""
    import time

    with sock or socket.create_connection(("127.0.0.1", port), timeout=within) as sock:
        started = time.monotonic()
        sock.sendall(head + first)
        sock.settimeout(0.5)
        while time.monotonic() - started < within:
            try:
                answer = sock.recv(65536)
            except TimeoutError:
                try:
                    sock.sendall(b" ")
                except OSError:  # the server closed the connection: read what it said
                    pass
                continue
            took = time.monotonic() - started
            sock.settimeout(5)
            while more := sock.recv(65536):  # the rest, until the server closes the connection
                answer += more
            return answer, took
    raise AssertionError(f"no answer within {within} s to a request that never completes")


def assert_head_timed_out(answer: bytes, took: float) -> None:
    """408 with `connection: close` at the head deadline, saying which setting."""
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer
    assert b"\r\nconnection: close\r\n" in answer.lower(), answer
    assert answer.endswith(f"request headers not complete after {HEADER_TIMEOUT:g} s "
                           "(OTEL_AI_HTTP_HEADER_TIMEOUT_SECONDS): send the request without pauses\n".encode()), answer
    assert HEADER_TIMEOUT - 0.5 < took < HEADER_TIMEOUT + 5, took


@pytest.mark.parametrize("which", ["http", "otlp_http"])
def test_slow_headers_get_408_at_the_deadline(secured: ServerProcess, which: str) -> None:
    """A client sending header bytes every half second (slowloris) kept a connection, its file descriptor
    and a task for as long as it went on, on serve's port and on OTLP/HTTP's: uvicorn's only timeout
    (keep-alive) stops at a request's first byte. Now the head has OTEL_AI_HTTP_HEADER_TIMEOUT_SECONDS,
    then 408 and the connection closes; a normal request on a new connection is answered as before."""
    port = secured.port if which == "http" else secured.otlp_http_port
    head = b"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
    answer, took = trickle_until_answered(port, head, b"a", within=HEADER_TIMEOUT + 10)
    assert_head_timed_out(answer, took)
    assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=30).status_code in (200, 404)


def test_a_silent_connection_is_closed_at_the_head_deadline(secured: ServerProcess) -> None:
    """A connection that sends nothing at all was held for ever too (keep-alive starts only after a response)."""
    import time

    with socket.create_connection(("127.0.0.1", secured.port), timeout=HEADER_TIMEOUT + 10) as sock:
        started = time.monotonic()
        answer = sock.recv(65536)
        took = time.monotonic() - started
        while more := sock.recv(65536):
            answer += more
    assert_head_timed_out(answer, took)


def test_a_slow_second_request_on_a_kept_alive_connection_is_closed(secured: ServerProcess) -> None:
    """After a first request is answered, keep-alive closes an idle connection, but its timer stops at the next
    request's first byte: a second head sent slowly held the connection for ever. It has the same deadline."""
    sock = socket.create_connection(("127.0.0.1", secured.port), timeout=30)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    first = b""
    while b"\r\n\r\n" not in first or not first.rstrip().endswith(b"}"):  # a small JSON body
        first += sock.recv(65536)
    assert first.startswith(b"HTTP/1.1 200"), first
    answer, took = trickle_until_answered(secured.port, b"GET /healthz HTTP/1.1\r\nX-Slow: ", b"a",
                                          within=HEADER_TIMEOUT + 10, sock=sock)
    assert_head_timed_out(answer, took)


@pytest.mark.usefixtures("slow_spans")
def test_the_head_deadline_does_not_cut_a_slow_answer(secured: ServerProcess) -> None:
    """The deadline covers receiving the head only: a query running several times longer is answered on the
    same connection (a slow body is the body deadline's business, see the 408 test above)."""
    import time

    slow = {"sql": "SELECT sum(cityHash64(toString(x), toString(y))) AS s FROM otel_traces "
                   "ARRAY JOIN range(3000) AS x ARRAY JOIN range(4000) AS y WHERE SpanName = 'slow'"}
    with httpx.Client(timeout=120) as client:
        started = time.monotonic()
        r = client.post(f"{secured.http_url}/api/sql", json=slow, headers=AUTH)
        took = time.monotonic() - started
        assert r.status_code == 200, r.text[:300]
        assert took > HEADER_TIMEOUT * 1.5, f"the query took only {took:.1f} s: make it longer"
        assert client.get(f"{secured.http_url}/healthz").status_code == 200  # the kept-alive connection, reused


@pytest.mark.parametrize("path,auth", [("/set-session-cookie", b""),
                                       ("/api/sql", f"Authorization: Bearer {TOKEN}\r\n".encode())])
def test_a_slow_body_gets_408_at_the_deadline(secured: ServerProcess, path: str, auth: bytes) -> None:
    """A client that declares a body and trickles it kept a connection, its file descriptor and a task open
    for as long as it went on (uvicorn waits for body bytes for ever): now the body has
    OTEL_AI_HTTP_BODY_TIMEOUT_SECONDS to arrive, logged in or not, then 408 and the connection closes."""
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            "Content-Length: 100000\r\n").encode() + auth + b"\r\n"
    answer, took = trickle_until_answered(secured.port, head, b'{"sql": "', within=BODY_TIMEOUT + 10)
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert BODY_TIMEOUT - 0.5 < took < BODY_TIMEOUT + 5, took
    body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert body["error"].startswith(f"request body not complete after {BODY_TIMEOUT:g} s "
                                    "(OTEL_AI_HTTP_BODY_TIMEOUT_SECONDS; "), body


def test_anonymous_routes_refuse_large_bodies(secured: ServerProcess) -> None:
    body = json.dumps({"session_id": "a" * (CAP + 1)})
    assert_too_large(httpx.post(f"{secured.http_url}/set-session-cookie", content=body,
                                headers={"content-type": "application/json"}, timeout=60))
    small = httpx.post(f"{secured.http_url}/set-session-cookie", json={"session_id": "abc"}, timeout=60)
    assert small.status_code == 200, small.text


def test_api_refuses_large_and_chunked_bodies(secured: ServerProcess) -> None:
    url = f"{secured.http_url}/api/ask"
    declared = json.dumps({"question": "why is it slow?", "role": "r" * (CAP + 1)})
    assert_too_large(httpx.post(url, content=declared, headers={**AUTH, "content-type": "application/json"},
                                timeout=60))
    chunks = [b'{"question": "why?", "role": "'] + [b"r" * 65536] * 5 + [b'"}']
    assert_too_large(httpx.post(url, content=iter(chunks), headers={**AUTH, "content-type": "application/json"},
                                timeout=60))
    # an anonymous caller learns nothing about sizes: the auth check comes first
    assert httpx.post(url, content=declared, headers={"content-type": "application/json"},
                      timeout=60).status_code == 401
    ok = httpx.post(url, json={"question": "which services are failing?", "model": "builtin"}, headers=AUTH,
                    timeout=120)
    assert ok.status_code == 200, ok.text


def test_login_still_works(secured: ServerProcess) -> None:
    r = httpx.post(f"{secured.http_url}/login", data={"username": "ann", "password": "pw-ann"}, timeout=30)
    assert r.status_code == 200 and r.cookies.get("access_token")


def test_otlp_on_the_main_port_keeps_ingests_limit(secured: ServerProcess) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add().scope_spans.add()
    span = spans.spans.add(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, name="big", start_time_unix_nano=1,
                           end_time_unix_nano=2)
    span.attributes.add(key="payload").value.string_value = "x" * (CAP * 2)
    r = httpx.post(f"{secured.http_url}/v1/traces", content=request.SerializeToString(),
                   headers={"content-type": "application/x-protobuf"}, timeout=60)
    assert r.status_code == 200, r.text


def test_deeply_nested_json_is_a_bad_request(secured: ServerProcess) -> None:
    """90,000 nested arrays (180 kB, under every size cap) overflow Python's JSON decoder: a 400 that
    says what to send, not a 500 with a traceback in the log."""
    nested = b'{"sql": ' + b"[" * 90_000 + b"]" * 90_000 + b"}"
    r = httpx.post(f"{secured.http_url}/api/sql", content=nested, headers={**AUTH, "content-type": "application/json"},
                   timeout=60)
    assert r.status_code == 400, r.text[:300]
    assert r.json() == {"error": 'send JSON {"sql": "SELECT ..."}'}


@pytest.mark.usefixtures("slow_spans")
def test_many_waiting_queries_do_not_hold_up_health(secured: ServerProcess) -> None:
    """60 concurrent queries of about 3 s each on a pool of 2: the ones waiting for a handle (503 after
    10 s) used to wait inside the 40 worker threads sync routes share, and /healthz waited 9 s for one.
    Now they wait on the event loop, and every health check meanwhile answers in under 2 s."""
    import asyncio
    import time

    slow = {"sql": "SELECT sum(cityHash64(toString(x))) AS s FROM otel_traces ARRAY JOIN range(2000000) AS x "
                   "WHERE SpanName = 'slow'"}

    async def load() -> tuple[list[int], list[float]]:
        async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=100)) as client:
            queries = [asyncio.create_task(client.post(f"{secured.http_url}/api/sql", json=slow, headers=AUTH))
                       for _ in range(60)]
            health: list[float] = []
            while not all(q.done() for q in queries):
                started = time.monotonic()
                assert (await client.get(f"{secured.http_url}/healthz")).status_code == 200
                health.append(time.monotonic() - started)
            return [(await q).status_code for q in queries], health

    statuses, health = asyncio.run(load())
    assert set(statuses) <= {200, 503} and 200 in statuses and 503 in statuses, statuses
    assert max(health) < 2.0, sorted(health)[-5:]


def test_no_generated_api_pages(secured: ServerProcess) -> None:
    """FastAPI's /openapi.json for our API failed with a 500 (it cannot describe the routes' responses): it is
    not generated (what answers there now is the chat's own app, describing only its own routes)."""
    for path in ("/openapi.json", "/docs", "/redoc"):
        assert httpx.get(f"{secured.http_url}{path}", timeout=30).status_code != 500, path
    assert '"/api/sql"' not in httpx.get(f"{secured.http_url}/openapi.json", timeout=30).text
