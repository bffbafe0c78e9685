-- Anomalies found by the scorer (anomaly/): one row per flagged entity window and detector.
-- entity = (service, operation); operation '' is the service as a whole. score is calibrated so that
-- 1.0 is the detection threshold (see docs/anomaly.md); severity bands: info < 2 <= warning < 4 <= critical.
-- contributions: JSON list of {feature, label, actual, expected, z, share}, largest share first.
-- A re-scored window replaces its earlier row (ReplacingMergeTree on scored_at).

CREATE TABLE IF NOT EXISTS anomalies (
    window_start DateTime64(3, 'UTC'),
    window_end DateTime64(3, 'UTC'),
    service LowCardinality(String),
    operation String,
    span_kind LowCardinality(String) DEFAULT '',
    score Float64,
    severity LowCardinality(String),
    detector LowCardinality(String),
    kind LowCardinality(String) DEFAULT '',
    model_version String,
    features String DEFAULT '{}',
    contributions String DEFAULT '[]',
    explanation String,
    scored_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree(scored_at)
ORDER BY (window_start, service, operation, span_kind, detector)
SETTINGS index_granularity = 8192;
