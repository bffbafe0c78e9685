"""The group-commit writer on a real chDB database: concurrent requests share one insert, batches stop
at the size bound, and a failing table fails only the requests that wrote to it."""

from __future__ import annotations

import threading

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from ingest.mapping import Rows, logs_rows, traces_rows
from ingest.writer import BatchWriter
from store import Store
from tests.fixtures.otlp import spans_request


def _spans(first: int, count: int) -> Rows:
    return traces_rows(spans_request("writer", range(first, first + count)))


def _count(store: Store, table: str) -> int:
    return store.query(f"SELECT count() FROM {table}").scalar()


def test_concurrent_requests_share_one_insert(store: Store) -> None:
    remaining = [5]
    writer = BatchWriter(store.clone(), max_rows=10_000, max_wait=30, expected=lambda: remaining[0])
    try:
        futures = []
        for i in range(5):
            futures.append(writer.submit(_spans(i * 100, 100)))
            remaining[0] -= 1  # the writer lingers while requests are still being decoded
            writer.wake()
        for f in futures:
            assert f.result(60) is None
        assert writer.inserts == 1
        assert _count(store, "otel_traces") == 500
    finally:
        writer.close()


def test_batches_stop_at_the_row_bound(store: Store) -> None:
    remaining = [3]
    writer = BatchWriter(store.clone(), max_rows=1_000, max_wait=30, expected=lambda: remaining[0])
    try:
        futures = []
        for i in range(3):
            futures.append(writer.submit(_spans(i * 600, 600)))
            remaining[0] -= 1
            writer.wake()
        for f in futures:
            f.result(60)
        assert writer.inserts == 3  # 600 + 600 > 1,000: each request is its own insert
        assert _count(store, "otel_traces") == 1_800
    finally:
        writer.close()


def test_a_failing_table_fails_only_its_requests(store: Store) -> None:
    logs = ExportLogsServiceRequest()
    logs.resource_logs.add().scope_logs.add().log_records.add(time_unix_nano=1, severity_text="x")
    store.command("RENAME TABLE otel_logs TO otel_logs_away")
    remaining = [2]
    writer = BatchWriter(store.clone(), max_rows=10_000, max_wait=30, expected=lambda: remaining[0])
    try:
        log_future = writer.submit(logs_rows(logs))
        remaining[0] -= 1
        span_future = writer.submit(_spans(0, 10))
        remaining[0] -= 1
        writer.wake()
        assert span_future.result(60) is None
        with pytest.raises(Exception, match="otel_logs"):
            log_future.result(60)
        assert writer.inserts == 1  # the spans' insert; the logs' insert failed
        assert _count(store, "otel_traces") == 10
    finally:
        writer.close()
        store.command("RENAME TABLE otel_logs_away TO otel_logs")
    assert _count(store, "otel_logs") == 0


def test_close_commits_what_was_submitted(store: Store) -> None:
    writer = BatchWriter(store.clone(), max_rows=10_000, max_wait=30, expected=lambda: 1)  # would linger
    future = writer.submit(_spans(0, 50))
    writer.close()
    assert future.result(1) is None
    assert _count(store, "otel_traces") == 50


def test_clients_answered_by_a_commit_share_the_next_insert(store: Store) -> None:
    """Closed-loop exporters (each sends again once acknowledged) are waited for after a commit, so their
    requests keep going together instead of splitting into cohorts that alternate between inserts."""
    clients, rounds = 6, 10
    writer = BatchWriter(store.clone(), max_rows=100_000, max_wait=1)
    start = threading.Barrier(clients)
    errors: list[BaseException] = []

    def client(k: int) -> None:
        try:
            start.wait(30)
            for r in range(rounds):
                writer.submit(_spans((k * rounds + r) * 10, 10)).result(60)
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors
        assert _count(store, "otel_traces") == clients * rounds * 10
        # the writer takes the first request alone, the others wait for the next insert; from then on every
        # client shares each insert. Without waiting for answered clients those two cohorts keep alternating
        # (about two inserts per round).
        assert writer.inserts <= rounds + 3
    finally:
        writer.close()
