-- Chat messages and tool steps (Chainlit StepDict as JSON in `doc`), newest version per id wins.
CREATE TABLE IF NOT EXISTS chat_steps
(
    id String,
    thread_id String,
    version UInt64,
    created_at DateTime64(3, 'UTC'),
    doc String,
    deleted UInt8 DEFAULT 0
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (thread_id, id)
