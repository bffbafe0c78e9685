"""sim.split: a run sent in two time ranges delivers exactly the items of the whole run, each once."""

from __future__ import annotations

from datetime import timedelta

from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sim.emit import Exporters
from sim.runner import run_simulation
from sim.split import time_range
from tests.test_sim_model import ANCHOR, MemoryMetrics

CUT_NS = int((ANCHOR - timedelta(minutes=2)).timestamp()) * 10**9


def _run(start_ns: int | None = None, end_ns: int | None = None) -> tuple[list, list, list]:
    """(span keys, log keys, metric point keys) a 4-minute paymentFailure run delivers in the range."""
    ex = Exporters(InMemorySpanExporter(), InMemoryLogRecordExporter(), MemoryMetrics())
    sent = time_range(ex, start_ns, end_ns) if start_ns or end_ns else ex
    run_simulation("paymentFailure", history=timedelta(minutes=4), live=timedelta(0), seed=2, rate=2.0,
                   anchor=ANCHOR, exporters=sent)
    spans = [(s.context.span_id, s.start_time, s.end_time, s.status.status_code) for s in ex.spans.get_finished_spans()]
    logs = [(r.log_record.timestamp, str(r.log_record.body)) for r in ex.logs.get_finished_logs()]
    points = [(tuple(sorted(rm.resource.attributes.items())), m.name, tuple(sorted(p.attributes.items())),
               p.time_unix_nano, getattr(p, "value", None), getattr(p, "count", None))
              for b in ex.metrics.batches for rm in b.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
              for p in m.data.data_points]
    return spans, logs, points


def test_two_ranges_deliver_the_whole_run_once() -> None:
    whole = _run()
    before = _run(end_ns=CUT_NS)
    after = _run(start_ns=CUT_NS)
    for signal, all_items, b, a in zip(("spans", "logs", "metrics"), whole, before, after, strict=True):
        assert b and a, f"both ranges hold {signal}"
        assert sorted(b + a) == sorted(all_items), signal
    assert all(start < CUT_NS for _, start, _, _ in before[0]) and all(start >= CUT_NS for _, start, _, _ in after[0])
    assert all(t < CUT_NS for t, _ in before[1]) and all(t >= CUT_NS for t, _ in after[1])
    assert all(p[3] < CUT_NS for p in before[2]) and all(p[3] >= CUT_NS for p in after[2])
