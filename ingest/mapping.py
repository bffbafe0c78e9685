"""OTLP export requests -> column-oriented rows of the Collector ClickHouse exporter's tables.

Rows are built straight into per-column lists (no per-row dicts) so one batch becomes one columnar
insert. Values follow the exporter (exporter_traces.go, exporter_logs.go, internal/metrics/*.go):
lowercase hex ids ('' when empty), start time as Timestamp and end-start as Duration in ns, span
kind and status as pdata's `String()` ('Server', 'Unset', ...), attributes via `AsString`, scope
name/version in their own columns, ServiceName from the resource's `service.name`.

Times stay integer nanoseconds here; the writer rescales them for DateTime/DateTime64(p) columns.
Items with invalid ids or timestamps are rejected one by one (OTLP partial success); the rest of
the request is kept.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from ingest.values import as_string, attributes

# Largest nanosecond time a DateTime64(9) column holds (2262-04-11): anything above is rejected.
MAX_TIME_NS = 2**63 - 1
MAX_REASONS = 5

SPAN_KINDS = ("Unspecified", "Internal", "Server", "Client", "Producer", "Consumer")
STATUS_CODES = ("Unset", "Ok", "Error")
ZERO_TRACE_ID = "0" * 32
ZERO_SPAN_ID = "0" * 16

TRACE_COLUMNS = (
    "Timestamp", "TraceId", "SpanId", "ParentSpanId", "TraceState", "SpanName", "SpanKind", "ServiceName",
    "ResourceAttributes", "ScopeName", "ScopeVersion", "SpanAttributes", "Duration", "StatusCode",
    "StatusMessage", "Events.Timestamp", "Events.Name", "Events.Attributes", "Links.TraceId", "Links.SpanId",
    "Links.TraceState", "Links.Attributes",
)
LOG_COLUMNS = (
    "Timestamp", "TraceId", "SpanId", "TraceFlags", "SeverityText", "SeverityNumber", "ServiceName", "Body",
    "ResourceSchemaUrl", "ResourceAttributes", "ScopeSchemaUrl", "ScopeName", "ScopeVersion", "ScopeAttributes",
    "LogAttributes", "EventName",
)
_METRIC_COMMON = (
    "ResourceAttributes", "ResourceSchemaUrl", "ScopeName", "ScopeVersion", "ScopeAttributes",
    "ScopeDroppedAttrCount", "ScopeSchemaUrl", "ServiceName", "MetricName", "MetricDescription", "MetricUnit",
    "Attributes", "StartTimeUnix", "TimeUnix",
)
_EXEMPLARS = (
    "Exemplars.FilteredAttributes", "Exemplars.TimeUnix", "Exemplars.Value", "Exemplars.SpanId",
    "Exemplars.TraceId",
)
METRIC_COLUMNS = {
    "otel_metrics_gauge": (*_METRIC_COMMON, "Value", "Flags", *_EXEMPLARS),
    "otel_metrics_sum": (*_METRIC_COMMON, "Value", "Flags", *_EXEMPLARS, "AggregationTemporality", "IsMonotonic"),
    "otel_metrics_histogram": (
        *_METRIC_COMMON, "Count", "Sum", "BucketCounts", "ExplicitBounds", *_EXEMPLARS, "Flags", "Min", "Max",
        "AggregationTemporality",
    ),
    "otel_metrics_exponential_histogram": (
        *_METRIC_COMMON, "Count", "Sum", "Scale", "ZeroCount", "PositiveOffset", "PositiveBucketCounts",
        "NegativeOffset", "NegativeBucketCounts", *_EXEMPLARS, "Flags", "Min", "Max", "AggregationTemporality",
    ),
    "otel_metrics_summary": (
        *_METRIC_COMMON, "Count", "Sum", "ValueAtQuantiles.Quantile", "ValueAtQuantiles.Value", "Flags",
    ),
}
TABLE_COLUMNS: dict[str, tuple[str, ...]] = {"otel_traces": TRACE_COLUMNS, "otel_logs": LOG_COLUMNS, **METRIC_COLUMNS}
# Columns holding nanosecond times (scalars or arrays) that the writer may need to rescale.
TIME_COLUMNS = frozenset({"Timestamp", "Events.Timestamp", "StartTimeUnix", "TimeUnix", "Exemplars.TimeUnix"})


@dataclass
class Rows:
    """Column-oriented rows for several tables plus what was rejected and why."""

    tables: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    accepted: int = 0
    rejected: int = 0
    reasons: list[str] = field(default_factory=list)
    signal: str = ""  # traces | logs | metrics, when known without looking at the tables

    def table(self, name: str) -> dict[str, list[Any]]:
        cols = self.tables.get(name)
        if cols is None:
            cols = self.tables[name] = {c: [] for c in TABLE_COLUMNS[name]}
        return cols

    def reject(self, reason: str) -> None:
        self.rejected += 1
        if len(self.reasons) < MAX_REASONS:
            self.reasons.append(reason)

    @property
    def row_count(self) -> int:
        return sum(len(next(iter(cols.values()))) for cols in self.tables.values() if cols)

    def error_message(self, noun: str) -> str:
        if not self.rejected:
            return ""
        more = "" if self.rejected <= len(self.reasons) else f"; and {self.rejected - len(self.reasons)} more"
        return f"rejected {self.rejected} {noun}: " + "; ".join(self.reasons) + more


def _id_hex(raw: bytes, size: int) -> str | None:
    """Hex of an id that must be empty or exactly `size` bytes; None when it is neither."""
    if not raw:
        return ""
    if len(raw) != size:
        return None
    return raw.hex()


def _resource(resource: Any) -> tuple[dict[str, str], str]:  # noqa: ANN401
    attrs = attributes(resource.attributes)
    return attrs, attrs.get("service.name", "")


# Shared empty arrays for the common span without events or links (saves seven lists per span).
_NO_EVENTS: tuple[tuple, ...] = ((), (), ())
_NO_LINKS: tuple[tuple, ...] = ((), (), (), ())


def _events(events: Iterable[Any]) -> tuple[list, list, list] | str:  # noqa: ANN401
    """Events.Timestamp/Name/Attributes of one span, or why the span is rejected."""
    times, names, attrs = [], [], []
    for ev in events:
        if ev.time_unix_nano > MAX_TIME_NS:
            return f"event time {ev.time_unix_nano} out of range"
        times.append(ev.time_unix_nano)
        names.append(ev.name)
        attrs.append(attributes(ev.attributes))
    return times, names, attrs


def _links(links: Iterable[Any]) -> tuple[list, list, list, list] | str:  # noqa: ANN401
    """Links.TraceId/SpanId/TraceState/Attributes of one span, or why the span is rejected."""
    trace_ids, span_ids, states, attrs = [], [], [], []
    for link in links:
        tid, sid = _id_hex(link.trace_id, 16), _id_hex(link.span_id, 8)
        if tid is None or sid is None:
            return "link ids must be 16/8 bytes"
        trace_ids.append(tid)
        span_ids.append(sid)
        states.append(link.trace_state)
        attrs.append(attributes(link.attributes))
    return trace_ids, span_ids, states, attrs


def traces_rows(request: ExportTraceServiceRequest) -> Rows:
    """Spans of one request as otel_traces columns; spans with bad ids or times are rejected."""
    rows = Rows()
    cols = rows.table("otel_traces")
    c_ts, c_trace, c_span, c_parent, c_state = (cols[k] for k in TRACE_COLUMNS[:5])
    c_name, c_kind, c_service, c_res, c_sname, c_sver = (cols[k] for k in TRACE_COLUMNS[5:11])
    c_attrs, c_dur, c_status, c_smsg = (cols[k] for k in TRACE_COLUMNS[11:15])
    c_ets, c_ename, c_eattrs, c_ltrace, c_lspan, c_lstate, c_lattrs = (cols[k] for k in TRACE_COLUMNS[15:])
    kinds, statuses = SPAN_KINDS, STATUS_CODES
    for ri, rs in enumerate(request.resource_spans):
        res_attrs, service = _resource(rs.resource)
        for ss in rs.scope_spans:
            scope_name, scope_version = ss.scope.name, ss.scope.version
            for si, span in enumerate(ss.spans):
                trace_id, span_id = span.trace_id, span.span_id
                start, end = span.start_time_unix_nano, span.end_time_unix_nano
                if len(trace_id) != 16 or trace_id == b"\0" * 16:
                    rows.reject(f"resource {ri} span {si}: trace_id must be 16 non-zero bytes, got {len(trace_id)}")
                    continue
                if len(span_id) != 8 or span_id == b"\0" * 8:
                    rows.reject(f"resource {ri} span {si}: span_id must be 8 non-zero bytes, got {len(span_id)}")
                    continue
                parent = _id_hex(span.parent_span_id, 8)
                if parent is None:
                    rows.reject(f"resource {ri} span {si}: parent_span_id must be empty or 8 bytes")
                    continue
                if start == 0 or end < start or end > MAX_TIME_NS:
                    rows.reject(
                        f"resource {ri} span {si}: invalid times start={start} end={end} "
                        "(need 0 < start <= end < 2^63 ns)"
                    )
                    continue
                events, links = span.events, span.links
                ev = _events(events) if events else _NO_EVENTS
                ln = _links(links) if links else _NO_LINKS
                if isinstance(ev, str) or isinstance(ln, str):
                    rows.reject(f"resource {ri} span {si}: {ev if isinstance(ev, str) else ln}")
                    continue
                status = span.status
                c_ts.append(start)
                c_trace.append(trace_id.hex())
                c_span.append(span_id.hex())
                c_parent.append(parent)
                c_state.append(span.trace_state)
                c_name.append(span.name)
                c_kind.append(kinds[span.kind] if 0 <= span.kind < 6 else "")  # unknown kinds print "" in Go
                c_service.append(service)
                c_res.append(res_attrs)
                c_sname.append(scope_name)
                c_sver.append(scope_version)
                c_attrs.append(attributes(span.attributes))
                c_dur.append(end - start)
                c_status.append(statuses[status.code] if 0 <= status.code < 3 else "")
                c_smsg.append(status.message)
                c_ets.append(ev[0])
                c_ename.append(ev[1])
                c_eattrs.append(ev[2])
                c_ltrace.append(ln[0])
                c_lspan.append(ln[1])
                c_lstate.append(ln[2])
                c_lattrs.append(ln[3])
                rows.accepted += 1
    return rows


def logs_rows(request: ExportLogsServiceRequest) -> Rows:
    """Log records of one request as otel_logs columns (Timestamp falls back to ObservedTimestamp)."""
    rows = Rows()
    cols = rows.table("otel_logs")
    out = [cols[k] for k in LOG_COLUMNS]
    for ri, rl in enumerate(request.resource_logs):
        res_attrs, service = _resource(rl.resource)
        res_url = rl.schema_url
        for sl in rl.scope_logs:
            scope = sl.scope
            scope_attrs = attributes(scope.attributes)
            for li, rec in enumerate(sl.log_records):
                trace_id, span_id = _id_hex(rec.trace_id, 16), _id_hex(rec.span_id, 8)
                if trace_id is None or span_id is None:
                    rows.reject(f"resource {ri} log {li}: trace_id/span_id must be empty or 16/8 bytes")
                    continue
                ts = rec.time_unix_nano or rec.observed_time_unix_nano
                if ts > MAX_TIME_NS:
                    rows.reject(f"resource {ri} log {li}: time {ts} out of range (< 2^63 ns)")
                    continue
                values = (
                    ts, trace_id, span_id, rec.flags & 0xFF, rec.severity_text, rec.severity_number & 0xFF,
                    service, as_string(rec.body), res_url, res_attrs, sl.schema_url, scope.name, scope.version,
                    scope_attrs, attributes(rec.attributes), rec.event_name,
                )
                for col, value in zip(out, values, strict=True):
                    col.append(value)
                rows.accepted += 1
    return rows


def _exemplars(exemplars: Iterable[Any]) -> tuple[list, list, list, list, list] | None:  # noqa: ANN401
    attrs, times, values, span_ids, trace_ids = [], [], [], [], []
    for ex in exemplars:
        if ex.time_unix_nano > MAX_TIME_NS:
            return None
        tid, sid = _id_hex(ex.trace_id, 16), _id_hex(ex.span_id, 8)
        if tid is None or sid is None:
            return None
        attrs.append(attributes(ex.filtered_attributes))
        times.append(ex.time_unix_nano)
        values.append(ex.as_double if ex.WhichOneof("value") == "as_double" else float(ex.as_int))
        # The exporter hex-encodes fixed-size id arrays: a missing id is all zeros.
        span_ids.append(sid or ZERO_SPAN_ID)
        trace_ids.append(tid or ZERO_TRACE_ID)
    return attrs, times, values, span_ids, trace_ids


def metrics_rows(request: ExportMetricsServiceRequest) -> Rows:
    """Data points of one request into the five otel_metrics_* tables."""
    rows = Rows()
    for ri, rm in enumerate(request.resource_metrics):
        res_attrs, service = _resource(rm.resource)
        for sm in rm.scope_metrics:
            scope = sm.scope
            scope_attrs = attributes(scope.attributes)
            for metric in sm.metrics:
                kind = metric.WhichOneof("data")
                if kind is None:
                    continue
                table = {
                    "gauge": "otel_metrics_gauge",
                    "sum": "otel_metrics_sum",
                    "histogram": "otel_metrics_histogram",
                    "exponential_histogram": "otel_metrics_exponential_histogram",
                    "summary": "otel_metrics_summary",
                }[kind]
                data = getattr(metric, kind)
                cols = rows.table(table)
                common = [cols[k] for k in _METRIC_COMMON]
                for pi, dp in enumerate(data.data_points):
                    where = f"resource {ri} metric {metric.name!r} point {pi}"
                    if dp.time_unix_nano > MAX_TIME_NS or dp.start_time_unix_nano > MAX_TIME_NS:
                        rows.reject(f"{where}: time out of range (< 2^63 ns)")
                        continue
                    ex = None
                    if kind != "summary":
                        ex = _exemplars(dp.exemplars)
                        if ex is None:
                            rows.reject(f"{where}: exemplar with bad ids or time")
                            continue
                    values = (
                        res_attrs, rm.schema_url, scope.name, scope.version, scope_attrs,
                        scope.dropped_attributes_count, sm.schema_url, service, metric.name, metric.description,
                        metric.unit, attributes(dp.attributes), dp.start_time_unix_nano, dp.time_unix_nano,
                    )
                    for col, value in zip(common, values, strict=True):
                        col.append(value)
                    _append_point(cols, kind, data, dp, ex)
                    rows.accepted += 1
    return rows


def _append_point(cols: dict[str, list[Any]], kind: str, data: Any, dp: Any, ex: tuple | None) -> None:  # noqa: ANN401
    if kind in ("gauge", "sum"):
        cols["Value"].append(dp.as_double if dp.WhichOneof("value") == "as_double" else float(dp.as_int))
        cols["Flags"].append(dp.flags)
        if kind == "sum":
            cols["AggregationTemporality"].append(int(data.aggregation_temporality))
            cols["IsMonotonic"].append(bool(data.is_monotonic))
    elif kind == "histogram":
        cols["Count"].append(dp.count)
        cols["Sum"].append(dp.sum)
        cols["BucketCounts"].append(list(dp.bucket_counts))
        cols["ExplicitBounds"].append(list(dp.explicit_bounds))
        cols["Flags"].append(dp.flags)
        cols["Min"].append(dp.min)
        cols["Max"].append(dp.max)
        cols["AggregationTemporality"].append(int(data.aggregation_temporality))
    elif kind == "exponential_histogram":
        cols["Count"].append(dp.count)
        cols["Sum"].append(dp.sum)
        cols["Scale"].append(dp.scale)
        cols["ZeroCount"].append(dp.zero_count)
        cols["PositiveOffset"].append(dp.positive.offset)
        cols["PositiveBucketCounts"].append(list(dp.positive.bucket_counts))
        cols["NegativeOffset"].append(dp.negative.offset)
        cols["NegativeBucketCounts"].append(list(dp.negative.bucket_counts))
        cols["Flags"].append(dp.flags)
        cols["Min"].append(dp.min)
        cols["Max"].append(dp.max)
        cols["AggregationTemporality"].append(int(data.aggregation_temporality))
    else:  # summary
        cols["Count"].append(dp.count)
        cols["Sum"].append(dp.sum)
        cols["ValueAtQuantiles.Quantile"].append([q.quantile for q in dp.quantile_values])
        cols["ValueAtQuantiles.Value"].append([q.value for q in dp.quantile_values])
        cols["Flags"].append(dp.flags)
    if ex is not None:
        for name, values in zip(_EXEMPLARS, ex, strict=True):
            cols[name].append(values)
