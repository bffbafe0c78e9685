-- Saved dashboards (chat/dashboards.py): a named list of panels (tool calls or guarded SQL over
-- relative time windows) that is re-run on fresh data each time it is opened.
CREATE TABLE IF NOT EXISTS dashboards
(
    name String,
    service String,
    version UInt64,
    created_at DateTime64(3, 'UTC'),
    created_by String,
    spec String,
    deleted UInt8 DEFAULT 0
)
ENGINE = ReplacingMergeTree(version)
ORDER BY name
