-- Span statistics per minute and (service, operation, entry span or not), kept current by a
-- materialized view on every insert into otel_traces. Analytics tools (tools/rollup.py) read whole
-- minutes here and only the partial minutes at a window's edges from otel_traces: the overview and
-- the slowness thresholds read a few thousand rows instead of millions of spans.
-- Entry = server/consumer span or trace root: the same test as tools.traces.ENTRY (keep them equal).
-- DurationQuantiles: reservoir states (quantiles(), 8,192 samples), as exact as quantile() over the spans
-- (exact up to 8,192 spans, then sampled); they are big (up to 64 KiB) and slow to merge, so thresholds
-- use DurationSketch: exact quantiles of the durations truncated to 8 significant bits (quantilesBFloat16,
-- at most 0.8 % low), ~100x smaller and ~25x faster to merge.

CREATE TABLE IF NOT EXISTS otel_traces_1m (
    Minute DateTime CODEC(Delta, ZSTD(1)),
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    SpanName LowCardinality(String) CODEC(ZSTD(1)),
    Entry UInt8,
    Calls SimpleAggregateFunction(sum, UInt64),
    Errors SimpleAggregateFunction(sum, UInt64),
    DurationSum SimpleAggregateFunction(sum, UInt64),
    DurationMax SimpleAggregateFunction(max, UInt64),
    DurationQuantiles AggregateFunction(quantiles(0.5, 0.9, 0.95, 0.99), UInt64) CODEC(ZSTD(1)),
    DurationSketch AggregateFunction(quantilesBFloat16(0.5, 0.9, 0.95, 0.99), UInt64) CODEC(ZSTD(1))
) ENGINE = AggregatingMergeTree()
PARTITION BY toDate(Minute)
ORDER BY (Minute, ServiceName, SpanName, Entry)
{{TTL Minute}}
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1;

CREATE MATERIALIZED VIEW IF NOT EXISTS otel_traces_1m_mv
TO otel_traces_1m
AS SELECT
    toStartOfMinute(Timestamp) AS Minute,
    ServiceName,
    SpanName,
    toUInt8(SpanKind IN ('Server', 'Consumer', 'SPAN_KIND_SERVER', 'SPAN_KIND_CONSUMER') OR ParentSpanId = '') AS Entry,
    count() AS Calls,
    countIf(StatusCode IN ('Error', 'STATUS_CODE_ERROR')) AS Errors,
    sum(Duration) AS DurationSum,
    max(Duration) AS DurationMax,
    quantilesState(0.5, 0.9, 0.95, 0.99)(Duration) AS DurationQuantiles,
    quantilesBFloat16State(0.5, 0.9, 0.95, 0.99)(Duration) AS DurationSketch
FROM otel_traces
GROUP BY Minute, ServiceName, SpanName, Entry;

-- Spans stored before this migration (run before ingest starts, as `serve` does).
INSERT INTO otel_traces_1m
SELECT
    toStartOfMinute(Timestamp) AS Minute,
    ServiceName,
    SpanName,
    toUInt8(SpanKind IN ('Server', 'Consumer', 'SPAN_KIND_SERVER', 'SPAN_KIND_CONSUMER') OR ParentSpanId = '') AS Entry,
    count() AS Calls,
    countIf(StatusCode IN ('Error', 'STATUS_CODE_ERROR')) AS Errors,
    sum(Duration) AS DurationSum,
    max(Duration) AS DurationMax,
    quantilesState(0.5, 0.9, 0.95, 0.99)(Duration) AS DurationQuantiles,
    quantilesBFloat16State(0.5, 0.9, 0.95, 0.99)(Duration) AS DurationSketch
FROM otel_traces
WHERE (SELECT count() FROM otel_traces_1m) = 0
GROUP BY Minute, ServiceName, SpanName, Entry;
