-- Elements shown in chat threads (Plotly charts as JSON, text), so a reloaded thread shows its charts.
CREATE TABLE IF NOT EXISTS chat_elements
(
    id String,
    thread_id String,
    version UInt64,
    for_id String,
    doc String,
    content String CODEC(ZSTD(3)),
    mime String,
    deleted UInt8 DEFAULT 0
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (thread_id, id)
