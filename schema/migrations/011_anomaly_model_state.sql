-- Persisted scorer state (anomaly/state.py): one row per model version with its training window.
-- state is base64 of torch.save bytes (autoencoder weights, per-entity normalisation, calibration);
-- a later row with the same version (e.g. after drift re-baselining) replaces the earlier one.

CREATE TABLE IF NOT EXISTS anomaly_model_state (
    version UInt32,
    detector LowCardinality(String),
    created_at DateTime64(3, 'UTC'),
    train_start DateTime64(3, 'UTC'),
    train_end DateTime64(3, 'UTC'),
    window_seconds UInt32,
    entities UInt32,
    windows UInt64,
    metrics String DEFAULT '{}',
    state String
) ENGINE = ReplacingMergeTree(created_at)
ORDER BY version
SETTINGS index_granularity = 8192;
