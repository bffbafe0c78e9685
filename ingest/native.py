"""ClickHouse decodes OTLP itself: request bytes in, exporter rows out, no per-span Python.

The writer hands a group of already-validated request bodies (protobuf, length-delimited) to the
embedded engine as one file; one `INSERT ... SELECT ... FROM file(..., 'Protobuf')` with `ARRAY JOIN`
down to spans (or log records) maps them into the exporter's table in C++, outside the GIL. The
`.proto` text is regenerated from opentelemetry-proto's descriptors (the package ships none), with
every message in one file so no import has to resolve.

What SQL renders here must be byte for byte what `ingest.mapping` (the reference) produces. Where
it cannot be expressed in SQL, the insert refuses the group before writing anything, a check query
finds the requests at fault and the writer maps those with the Python reference instead:

- attribute values that are arrays or maps (Go JSON rendering), `string_value_strindex`, or doubles
  outside [1e-6, 1e21) / NaN / Inf (ClickHouse's float text matches Go's AsString only inside that
  range: checked on 60,000 values including random bit patterns);
- duplicate attribute keys (the reference keeps the last value at the first key's place);
- anything the reference would reject (bad ids, times): it writes the partial-success reasons.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from store import Store

MAX_TIME = 2**63 - 1

_SCALARS = {
    getattr(FieldDescriptor, f"TYPE_{name.upper()}"): name
    for name in ("double", "float", "int64", "uint64", "int32", "fixed64", "fixed32", "bool", "string", "bytes",
                 "uint32", "sfixed32", "sfixed64", "sint32", "sint64")
}


def _message_name(desc: Descriptor) -> str:
    return desc.full_name.replace(".", "_")


# Message fields declared as `bytes` (same wire encoding): ClickHouse then sees that an AnyValue holds
# an array or map without decoding it; those values go to the Python fallback anyway.
OPAQUE = frozenset({"opentelemetry.proto.common.v1.AnyValue.array_value",
                    "opentelemetry.proto.common.v1.AnyValue.kvlist_value"})


def proto_text(*roots: Descriptor) -> str:
    """One self-contained proto3 file holding `roots` and every message they reach.

    Enums become int32 (same wire encoding, and we map the numbers ourselves); real oneofs stay oneofs
    so `input_format_protobuf_oneof_presence` can say which `AnyValue` field was set; `OPAQUE` fields
    become bytes.
    """
    seen: dict[str, str] = {}

    def field(f: FieldDescriptor) -> str:
        if f.full_name in OPAQUE:
            kind = "bytes"
        elif f.type == FieldDescriptor.TYPE_MESSAGE:
            kind = _message_name(f.message_type)
        elif f.type == FieldDescriptor.TYPE_ENUM:
            kind = "int32"
        else:
            kind = _SCALARS[f.type]
        synthetic = f.containing_oneof is not None and f.containing_oneof.name.startswith("_")
        label = "repeated " if f.is_repeated else "optional " if synthetic else ""
        return f"{label}{kind} {f.name} = {f.number};"

    def visit(desc: Descriptor) -> None:
        if desc.full_name in seen:
            return
        seen[desc.full_name] = ""
        lines = [f"message {_message_name(desc)} {{"]
        oneofs: dict[str, list[FieldDescriptor]] = {}
        for f in desc.fields:
            if f.containing_oneof is not None and not f.containing_oneof.name.startswith("_"):
                oneofs.setdefault(f.containing_oneof.name, []).append(f)
            else:
                lines.append("  " + field(f))
        for name, members in oneofs.items():
            lines.append(f"  oneof {name} {{")
            lines.extend("    " + field(f) for f in members)
            lines.append("  }")
        lines.append("}")
        seen[desc.full_name] = "\n".join(lines)
        for f in desc.fields:
            if f.type == FieldDescriptor.TYPE_MESSAGE and f.full_name not in OPAQUE:
                visit(f.message_type)

    for root in roots:
        visit(root)
    return 'syntax = "proto3";\n\n' + "\n\n".join(seen.values()) + "\n"


# -- the nested structure ClickHouse reads (only the fields we map; the rest is skipped) -----------

# array_value, kvlist_value (opaque bytes, see OPAQUE) and string_value_strindex are read only so that
# the oneof presence column reports them: a field left out of the structure shows as 'none'.
_ANY = (
    "Tuple(string_value String, bool_value Bool, int_value Int64, double_value Float64, bytes_value String, "
    "array_value String, kvlist_value String, string_value_strindex Int32, "
    "value Enum8('none' = 0, 'string_value' = 1, 'bool_value' = 2, 'int_value' = 3, 'double_value' = 4, "
    "'array_value' = 5, 'kvlist_value' = 6, 'bytes_value' = 7, 'string_value_strindex' = 8))"
)
_KV = f"Array(Tuple(key String, value {_ANY}))"
_RESOURCE = f"resource Tuple(attributes {_KV})"
_SCOPE = f"scope Tuple(name String, version String, attributes {_KV})"

TRACES_STRUCTURE = (
    f"resource_spans Array(Tuple({_RESOURCE}, scope_spans Array(Tuple({_SCOPE}, spans Array(Tuple("
    "trace_id String, span_id String, trace_state String, parent_span_id String, name String, kind Int32, "
    f"start_time_unix_nano UInt64, end_time_unix_nano UInt64, attributes {_KV}, "
    f"events Array(Tuple(time_unix_nano UInt64, name String, attributes {_KV})), "
    f"links Array(Tuple(trace_id String, span_id String, trace_state String, attributes {_KV})), "
    "status Tuple(message String, code Int32)))))))"
)

LOGS_STRUCTURE = (
    f"resource_logs Array(Tuple({_RESOURCE}, schema_url String, scope_logs Array(Tuple({_SCOPE}, "
    "schema_url String, log_records Array(Tuple(time_unix_nano UInt64, observed_time_unix_nano UInt64, "
    f"severity_number Int32, severity_text String, body {_ANY}, attributes {_KV}, flags UInt32, "
    "trace_id String, span_id String, event_name String))))))"
)


def _value_ok(v: str) -> str:
    """SQL: an AnyValue tuple that the SQL rendering below reproduces exactly."""
    d = f"{v}.double_value"
    return (
        f"({v}.value IN ('none', 'string_value', 'bool_value', 'int_value', 'bytes_value') OR "
        f"({v}.value = 'double_value' AND ({d} = 0 OR (abs({d}) >= 1e-6 AND abs({d}) < 1e21))))"
    )


def _attrs_ok(a: str) -> str:
    """SQL: attributes with renderable values and no duplicate keys."""
    return (
        f"(arrayAll(kv -> {_value_ok('kv.value')}, {a}) AND "
        f"length(arrayDistinct(arrayMap(kv -> kv.key, {a}))) = length({a}))"
    )


def _render(v: str) -> str:
    """SQL: `pcommon.Value.AsString()` for the values `_value_ok` admits."""
    return (
        f"multiIf({v}.value = 'string_value', {v}.string_value, {v}.value = 'int_value', toString({v}.int_value), "
        f"{v}.value = 'bool_value', if({v}.bool_value, 'true', 'false'), "
        f"{v}.value = 'double_value', toString({v}.double_value), "
        f"{v}.value = 'bytes_value', base64Encode({v}.bytes_value), '')"
    )


def _map(a: str) -> str:
    return f"mapFromArrays(arrayMap(kv -> kv.key, {a}), arrayMap(kv -> {_render('kv.value')}, {a}))"


def _hex(col: str) -> str:
    return f"lower(hex({col}))"


def _ns(col: str) -> str:
    return f"fromUnixTimestamp64Nano(toInt64({col}))"


_SERVICE = f"{_map('rs.resource.attributes')}['service.name']"

_SPAN_OK = (
    "length(sp.trace_id) = 16 AND sp.trace_id != repeat('\\0', 16) "
    "AND length(sp.span_id) = 8 AND sp.span_id != repeat('\\0', 8) "
    "AND length(sp.parent_span_id) IN (0, 8) "
    f"AND sp.start_time_unix_nano != 0 AND sp.end_time_unix_nano >= sp.start_time_unix_nano "
    f"AND sp.end_time_unix_nano <= {MAX_TIME} "
    f"AND {_attrs_ok('sp.attributes')} "
    f"AND arrayAll(ev -> ev.time_unix_nano <= {MAX_TIME} AND {_attrs_ok('ev.attributes')}, sp.events) "
    "AND arrayAll(l -> length(l.trace_id) IN (0, 16) AND length(l.span_id) IN (0, 8) "
    f"AND {_attrs_ok('l.attributes')}, sp.links)"
)

TRACES_CHECK = (
    f"arrayAll(rs -> {_attrs_ok('rs.resource.attributes')} AND arrayAll(ss -> arrayAll(sp -> {_SPAN_OK}, "
    "ss.spans), rs.scope_spans), resource_spans)"
)

_KINDS = "['Unspecified', 'Internal', 'Server', 'Client', 'Producer', 'Consumer']"
_STATUSES = "['Unset', 'Ok', 'Error']"

TRACES_SELECT: dict[str, str] = {
    "Timestamp": _ns("sp.start_time_unix_nano"),
    "TraceId": _hex("sp.trace_id"),
    "SpanId": _hex("sp.span_id"),
    "ParentSpanId": _hex("sp.parent_span_id"),
    "TraceState": "sp.trace_state",
    "SpanName": "sp.name",
    "SpanKind": f"if(sp.kind >= 0 AND sp.kind < 6, {_KINDS}[sp.kind + 1], '')",
    "ServiceName": _SERVICE,
    "ResourceAttributes": _map("rs.resource.attributes"),
    "ScopeName": "ss.scope.name",
    "ScopeVersion": "ss.scope.version",
    "SpanAttributes": _map("sp.attributes"),
    "Duration": "sp.end_time_unix_nano - sp.start_time_unix_nano",
    "StatusCode": f"if(sp.status.code >= 0 AND sp.status.code < 3, {_STATUSES}[sp.status.code + 1], '')",
    "StatusMessage": "sp.status.message",
    "Events.Timestamp": f"arrayMap(ev -> {_ns('ev.time_unix_nano')}, sp.events)",
    "Events.Name": "arrayMap(ev -> ev.name, sp.events)",
    "Events.Attributes": f"arrayMap(ev -> {_map('ev.attributes')}, sp.events)",
    "Links.TraceId": f"arrayMap(l -> {_hex('l.trace_id')}, sp.links)",
    "Links.SpanId": f"arrayMap(l -> {_hex('l.span_id')}, sp.links)",
    "Links.TraceState": "arrayMap(l -> l.trace_state, sp.links)",
    "Links.Attributes": f"arrayMap(l -> {_map('l.attributes')}, sp.links)",
}
TRACES_JOIN = "ARRAY JOIN resource_spans AS rs ARRAY JOIN rs.scope_spans AS ss ARRAY JOIN ss.spans AS sp"

_LOG_OK = (
    "length(lr.trace_id) IN (0, 16) AND length(lr.span_id) IN (0, 8) "
    f"AND if(lr.time_unix_nano != 0, lr.time_unix_nano, lr.observed_time_unix_nano) <= {MAX_TIME} "
    f"AND {_value_ok('lr.body')} AND {_attrs_ok('lr.attributes')}"
)
LOGS_CHECK = (
    f"arrayAll(rl -> {_attrs_ok('rl.resource.attributes')} AND arrayAll(sl -> {_attrs_ok('sl.scope.attributes')} "
    f"AND arrayAll(lr -> {_LOG_OK}, sl.log_records), rl.scope_logs), resource_logs)"
)
LOGS_SELECT: dict[str, str] = {
    "Timestamp": _ns("if(lr.time_unix_nano != 0, lr.time_unix_nano, lr.observed_time_unix_nano)"),
    "TraceId": _hex("lr.trace_id"),
    "SpanId": _hex("lr.span_id"),
    "TraceFlags": "bitAnd(lr.flags, 255)",
    "SeverityText": "lr.severity_text",
    "SeverityNumber": "bitAnd(lr.severity_number, 255)",
    "ServiceName": f"{_map('rl.resource.attributes')}['service.name']",
    "Body": _render("lr.body"),
    "ResourceSchemaUrl": "rl.schema_url",
    "ResourceAttributes": _map("rl.resource.attributes"),
    "ScopeSchemaUrl": "sl.schema_url",
    "ScopeName": "sl.scope.name",
    "ScopeVersion": "sl.scope.version",
    "ScopeAttributes": _map("sl.scope.attributes"),
    "LogAttributes": _map("lr.attributes"),
    "EventName": "lr.event_name",
}
LOGS_JOIN = "ARRAY JOIN resource_logs AS rl ARRAY JOIN rl.scope_logs AS sl ARRAY JOIN sl.log_records AS lr"


# -- metrics: one structure, one insert per metric-type table ------------------------------------

_EXEMPLAR = (
    f"exemplars Array(Tuple(filtered_attributes {_KV}, time_unix_nano UInt64, as_double Float64, as_int Int64, "
    "span_id String, trace_id String, value Enum8('none' = 0, 'as_double' = 3, 'as_int' = 6)))"
)
_POINT_HEAD = f"attributes {_KV}, start_time_unix_nano UInt64, time_unix_nano UInt64"
_NUMBER_POINTS = (
    f"data_points Array(Tuple({_POINT_HEAD}, as_double Float64, as_int Int64, {_EXEMPLAR}, flags UInt32, "
    "value Enum8('none' = 0, 'as_double' = 4, 'as_int' = 6)))"
)
_HISTOGRAM_POINTS = (
    f"data_points Array(Tuple({_POINT_HEAD}, count UInt64, sum Float64, bucket_counts Array(UInt64), "
    f"explicit_bounds Array(Float64), {_EXEMPLAR}, flags UInt32, min Float64, max Float64))"
)
_BUCKETS = "Tuple(offset Int32, bucket_counts Array(UInt64))"
_EXP_POINTS = (
    f"data_points Array(Tuple({_POINT_HEAD}, count UInt64, sum Float64, scale Int32, zero_count UInt64, "
    f"positive {_BUCKETS}, negative {_BUCKETS}, flags UInt32, {_EXEMPLAR}, min Float64, max Float64))"
)
_SUMMARY_POINTS = (
    f"data_points Array(Tuple({_POINT_HEAD}, count UInt64, sum Float64, "
    "quantile_values Array(Tuple(quantile Float64, value Float64)), flags UInt32))"
)
# `data` is the Metric oneof: which type the metric is, as the reference's WhichOneof("data") says.
_METRIC_KINDS = {"gauge": 5, "sum": 7, "histogram": 9, "exponential_histogram": 10, "summary": 11}
METRICS_STRUCTURE = (
    f"resource_metrics Array(Tuple({_RESOURCE}, schema_url String, scope_metrics Array(Tuple("
    "scope Tuple(name String, version String, attributes " + _KV + ", dropped_attributes_count UInt32), "
    "schema_url String, metrics Array(Tuple(name String, description String, unit String, "
    f"gauge Tuple({_NUMBER_POINTS}), "
    f"sum Tuple({_NUMBER_POINTS}, aggregation_temporality Int32, is_monotonic Bool), "
    f"histogram Tuple({_HISTOGRAM_POINTS}, aggregation_temporality Int32), "
    f"exponential_histogram Tuple({_EXP_POINTS}, aggregation_temporality Int32), "
    f"summary Tuple({_SUMMARY_POINTS}), "
    "data Enum8('none' = 0, " + ", ".join(f"'{k}' = {n}" for k, n in _METRIC_KINDS.items()) + ")))))))"
)


def _exemplars_ok(e: str) -> str:
    """SQL: exemplars the reference keeps (ids empty or full size, time in range), attributes renderable."""
    return (
        f"arrayAll(ex -> ex.time_unix_nano <= {MAX_TIME} AND length(ex.trace_id) IN (0, 16) "
        f"AND length(ex.span_id) IN (0, 8) AND {_attrs_ok('ex.filtered_attributes')}, {e})"
    )


def _points_ok(points: str, exemplars: bool) -> str:
    ex = f" AND {_exemplars_ok('dp.exemplars')}" if exemplars else ""
    return (
        f"arrayAll(dp -> dp.time_unix_nano <= {MAX_TIME} AND dp.start_time_unix_nano <= {MAX_TIME} "
        f"AND {_attrs_ok('dp.attributes')}{ex}, {points})"
    )


_METRIC_OK = (
    f"multiIf(m.data = 'gauge', {_points_ok('m.gauge.data_points', True)}, "
    f"m.data = 'sum', {_points_ok('m.sum.data_points', True)}, "
    f"m.data = 'histogram', {_points_ok('m.histogram.data_points', True)}, "
    f"m.data = 'exponential_histogram', {_points_ok('m.exponential_histogram.data_points', True)}, "
    f"m.data = 'summary', {_points_ok('m.summary.data_points', False)}, true)"
)
METRICS_CHECK = (
    f"arrayAll(rm -> {_attrs_ok('rm.resource.attributes')} AND arrayAll(sm -> {_attrs_ok('sm.scope.attributes')} "
    f"AND arrayAll(m -> {_METRIC_OK}, sm.metrics), rm.scope_metrics), resource_metrics)"
)


def _number(v: str) -> str:
    """SQL: the reference's `as_double if WhichOneof == 'as_double' else float(as_int)`."""
    return f"if({v}.value = 'as_double', {v}.as_double, toFloat64({v}.as_int))"


_METRIC_COMMON_SELECT: dict[str, str] = {
    "ResourceAttributes": _map("rm.resource.attributes"),
    "ResourceSchemaUrl": "rm.schema_url",
    "ScopeName": "sm.scope.name",
    "ScopeVersion": "sm.scope.version",
    "ScopeAttributes": _map("sm.scope.attributes"),
    "ScopeDroppedAttrCount": "sm.scope.dropped_attributes_count",
    "ScopeSchemaUrl": "sm.schema_url",
    "ServiceName": f"{_map('rm.resource.attributes')}['service.name']",
    "MetricName": "m.name",
    "MetricDescription": "m.description",
    "MetricUnit": "m.unit",
    "Attributes": _map("dp.attributes"),
    "StartTimeUnix": _ns("dp.start_time_unix_nano"),
    "TimeUnix": _ns("dp.time_unix_nano"),
}
_EXEMPLARS_SELECT: dict[str, str] = {
    "Exemplars.FilteredAttributes": f"arrayMap(ex -> {_map('ex.filtered_attributes')}, dp.exemplars)",
    "Exemplars.TimeUnix": f"arrayMap(ex -> {_ns('ex.time_unix_nano')}, dp.exemplars)",
    "Exemplars.Value": f"arrayMap(ex -> {_number('ex')}, dp.exemplars)",
    # the exporter hex-encodes fixed-size id arrays: a missing id is all zeros
    "Exemplars.SpanId": f"arrayMap(ex -> if(ex.span_id = '', repeat('0', 16), {_hex('ex.span_id')}), dp.exemplars)",
    "Exemplars.TraceId": f"arrayMap(ex -> if(ex.trace_id = '', repeat('0', 32), {_hex('ex.trace_id')}), "
                         "dp.exemplars)",
}
_HISTOGRAM_TAIL: dict[str, str] = {
    "Flags": "dp.flags", "Min": "dp.min", "Max": "dp.max", "AggregationTemporality": "{data}.aggregation_temporality",
}


def _metric_join(kind: str) -> str:
    return (
        "ARRAY JOIN resource_metrics AS rm ARRAY JOIN rm.scope_metrics AS sm "
        f"ARRAY JOIN arrayFilter(x -> x.data = '{kind}', sm.metrics) AS m ARRAY JOIN m.{kind}.data_points AS dp"
    )


# `{data}` stands for the metric's type message (`m.sum`, ...), where temporality and monotonicity live.
_METRICS_SELECTS: dict[str, tuple[str, dict[str, str]]] = {
    "gauge": ("otel_metrics_gauge", {
        **_METRIC_COMMON_SELECT, "Value": _number("dp"), "Flags": "dp.flags", **_EXEMPLARS_SELECT,
    }),
    "sum": ("otel_metrics_sum", {
        **_METRIC_COMMON_SELECT, "Value": _number("dp"), "Flags": "dp.flags", **_EXEMPLARS_SELECT,
        "AggregationTemporality": "{data}.aggregation_temporality", "IsMonotonic": "{data}.is_monotonic",
    }),
    "histogram": ("otel_metrics_histogram", {
        **_METRIC_COMMON_SELECT, "Count": "dp.count", "Sum": "dp.sum", "BucketCounts": "dp.bucket_counts",
        "ExplicitBounds": "dp.explicit_bounds", **_EXEMPLARS_SELECT, **_HISTOGRAM_TAIL,
    }),
    "exponential_histogram": ("otel_metrics_exponential_histogram", {
        **_METRIC_COMMON_SELECT, "Count": "dp.count", "Sum": "dp.sum", "Scale": "dp.scale",
        "ZeroCount": "dp.zero_count", "PositiveOffset": "dp.positive.offset",
        "PositiveBucketCounts": "dp.positive.bucket_counts", "NegativeOffset": "dp.negative.offset",
        "NegativeBucketCounts": "dp.negative.bucket_counts", **_EXEMPLARS_SELECT, **_HISTOGRAM_TAIL,
    }),
    "summary": ("otel_metrics_summary", {
        **_METRIC_COMMON_SELECT, "Count": "dp.count", "Sum": "dp.sum",
        "ValueAtQuantiles.Quantile": "arrayMap(q -> q.quantile, dp.quantile_values)",
        "ValueAtQuantiles.Value": "arrayMap(q -> q.value, dp.quantile_values)", "Flags": "dp.flags",
    }),
}


@dataclass(frozen=True)
class NativeTarget:
    """One table a signal's rows go to: its columns' SQL and the ARRAY JOIN down to its rows."""

    table: str
    select: dict[str, str]
    join: str


METRICS_TARGETS: tuple[NativeTarget, ...] = tuple(
    NativeTarget(table, {c: e.replace("{data}", f"m.{kind}") for c, e in select.items()}, _metric_join(kind))
    for kind, (table, select) in _METRICS_SELECTS.items()
)
METRIC_TABLES: dict[str, str] = {kind: table for kind, (table, _) in _METRICS_SELECTS.items()}


_FALLBACK = "otel-ai: a request needs the Python mapper"


class NativeUnreadable(RuntimeError):
    """ClickHouse could not read a group that upb accepted: the writer maps it in Python instead."""


@dataclass(frozen=True)
class NativeSignal:
    """How one signal's requests go through ClickHouse: its structure, check and target tables.

    Traces and logs have one table; metrics one per metric type, all read from the same file.
    """

    name: str
    message: str
    structure: str
    check: str
    targets: tuple[NativeTarget, ...]


NATIVE_SIGNALS: dict[str, NativeSignal] = {
    "traces": NativeSignal(
        "traces", _message_name(ExportTraceServiceRequest.DESCRIPTOR), TRACES_STRUCTURE, TRACES_CHECK,
        (NativeTarget("otel_traces", TRACES_SELECT, TRACES_JOIN),),
    ),
    "logs": NativeSignal(
        "logs", _message_name(ExportLogsServiceRequest.DESCRIPTOR), LOGS_STRUCTURE, LOGS_CHECK,
        (NativeTarget("otel_logs", LOGS_SELECT, LOGS_JOIN),),
    ),
    "metrics": NativeSignal(
        "metrics", _message_name(ExportMetricsServiceRequest.DESCRIPTOR), METRICS_STRUCTURE, METRICS_CHECK,
        METRICS_TARGETS,
    ),
}


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _sql_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


class NativeDecoder:
    """Writes groups of OTLP request bodies into their table with ClickHouse doing decode and mapping.

    Only for the embedded engine: `file()` reads a file this process wrote. Used by the single writer
    thread, so one scratch directory is enough.
    """

    def __init__(self, scratch: Path | None = None) -> None:
        self.dir = Path(scratch or tempfile.mkdtemp(prefix="otel-ai-otlp-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.schema = self.dir / "otlp.proto"
        self.schema.write_text(proto_text(ExportTraceServiceRequest.DESCRIPTOR, ExportLogsServiceRequest.DESCRIPTOR,
                                          ExportMetricsServiceRequest.DESCRIPTOR))
        self._data = self.dir / "batch.bin"

    def _source(self, sig: NativeSignal) -> str:
        return f"file({_sql_string(str(self._data))}, 'Protobuf', {_sql_string(sig.structure)})"

    def _settings(self, sig: NativeSignal) -> dict[str, object]:
        return {
            "format_schema": f"{self.schema}:{sig.message}",
            "input_format_protobuf_oneof_presence": 1,
            "max_threads": 1,  # one file, one stream: keeps rowNumberInAllBlocks() in request order
        }

    def write(self, store: Store, signal: str, bodies: list[bytes], items: list[int],
              columns: Mapping[str, list[str]], tables: Collection[str] | None = None
              ) -> list[int | None]:
        """Insert the requests ClickHouse can map; per request its item count, or None for the Python path.

        One query per target table in the common case: the first insert checks every request and throws
        (before writing anything: one input block) if any needs the Python fallback; only then a check
        query finds which, and the inserts take the others. `items` are the requests' item counts (from
        upb); `columns` each table's columns: those a table lacks
        are left out, as the Python insert does. `tables` limits the inserts to the tables the group's
        items go to (metrics: a group of gauges and sums need not pay three empty queries).
        """
        sig = NATIVE_SIGNALS[signal]
        targets = [t for t in sig.targets if tables is None or t.table in tables]
        with open(self._data, "wb") as f:
            for body in bodies:
                f.write(_varint(len(body)))
                f.write(body)
        try:
            source = self._source(sig)
            settings = self._settings(sig)
            inserts = []
            for target in targets:
                names = [c for c in target.select if c in columns[target.table]]
                inserts.append(
                    f"INSERT INTO `{target.table}` ({', '.join(f'`{c}`' for c in names)}) "
                    f"SELECT {', '.join(target.select[c] for c in names)} FROM "
                    f"(SELECT rowNumberInAllBlocks() AS req, * FROM {source} {{where}}) {target.join}"
                )
            if inserts:
                try:
                    store.command(inserts[0].format(where=f"WHERE throwIf(NOT {sig.check}, '{_FALLBACK}') = 0"),
                                  settings=settings)
                except Exception as exc:
                    if _FALLBACK not in str(exc):
                        self._check(store, sig, len(bodies))  # NativeUnreadable if ClickHouse cannot read the file
                        raise  # it can: the store failed
                else:
                    for insert in inserts[1:]:  # every request passed the check: no need to repeat it
                        store.command(insert.format(where=""), settings=settings)
                    return list(items)
            ok = self._check(store, sig, len(bodies))
            native = [i for i in range(len(bodies)) if ok[i]]
            if native:
                for insert in inserts:
                    store.command(insert.format(where=f"WHERE req IN ({','.join(map(str, native))})"),
                                  settings=settings)
            return [count if ok[i] else None for i, count in enumerate(items)]
        finally:
            os.unlink(self._data)

    def _check(self, store: Store, sig: NativeSignal, expected: int) -> list[bool]:
        """Per request in the file, whether the SQL mapping renders it exactly."""
        try:
            rows = store.query(f"SELECT rowNumberInAllBlocks(), {sig.check} FROM {self._source(sig)}",
                               settings=self._settings(sig)).rows
        except Exception as exc:
            raise NativeUnreadable(str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)) from exc
        if len(rows) != expected:
            raise NativeUnreadable(f"ClickHouse read {len(rows)} of {expected} OTLP requests")
        ok = [False] * expected
        for number, flag in rows:
            ok[number] = bool(flag)
        return ok
