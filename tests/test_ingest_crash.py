"""Sustained concurrent ingest into a real serve that is killed (-9) or stopped (SIGTERM) mid-stream:
afterwards every span that was acknowledged is stored."""

from __future__ import annotations

import threading
import time

import grpc

from tests.fixtures.otlp import grpc_export, span_number, spans_request
from tests.fixtures.server import ServerProcess

BATCH = 200
STREAMS = 3


class Load:
    """STREAMS client threads sending distinct span numbers until told to stop; records what was acked."""

    def __init__(self, srv: ServerProcess) -> None:
        self.srv = srv
        self.acked: set[int] = set()
        self.refused: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(STREAMS)]

    def _run(self, stream: int) -> None:
        channel = grpc.insecure_channel(self.srv.otlp_grpc_endpoint)
        n = stream * 10_000_000
        while not self._stop.is_set():
            ids = range(n, n + BATCH)
            n += BATCH
            answer = grpc_export(channel, "traces", spans_request("load", ids).SerializeToString(), timeout=60)
            if answer.code == grpc.StatusCode.OK:
                with self._lock:
                    self.acked.update(ids)
            else:
                self.refused.append(answer.code.name)
                time.sleep(0.05)
        channel.close()

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def wait_for(self, acked: int, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acked) < acked:
            assert time.monotonic() < deadline, f"only {len(self.acked)} spans acked: {self.srv.log()[-2000:]}"
            time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)


def _stored(srv: ServerProcess) -> set[int]:
    return {span_number(r["SpanId"]) for r in srv.query("SELECT SpanId FROM otel_traces")}


def test_kill_9_mid_ingest_loses_no_acknowledged_span(server_factory) -> None:
    srv = server_factory()
    with Load(srv) as load:
        load.wait_for(3_000)
        srv.kill()  # SIGKILL while requests are in flight
        time.sleep(0.3)
    acked = set(load.acked)
    assert load.refused, "some requests should have failed once the server was gone"
    srv.start()  # the data directory opens again after the crash
    srv.stop()
    stored = _stored(srv)
    assert acked <= stored, f"{len(acked - stored)} acknowledged spans missing after kill -9"


def test_sigterm_mid_ingest_flushes_and_exits_cleanly(server_factory) -> None:
    srv = server_factory()
    with Load(srv) as load:
        load.wait_for(3_000)
        assert srv.stop() == 0, srv.log()[-3000:]
    acked = set(load.acked)
    stored = _stored(srv)
    assert acked <= stored, f"{len(acked - stored)} acknowledged spans missing after SIGTERM"
