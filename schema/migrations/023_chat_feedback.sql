-- Thumbs up/down (value 1/0) and comments on chat answers; `otel-ai eval export-feedback` turns
-- them into eval cases (chat/feedback.py) by joining the answer step and the question before it.
CREATE TABLE IF NOT EXISTS chat_feedback
(
    id String,
    thread_id String,
    step_id String,
    version UInt64,
    created_at DateTime64(3, 'UTC'),
    value Int8,
    comment String,
    user_identifier String,
    deleted UInt8 DEFAULT 0
)
ENGINE = ReplacingMergeTree(version)
ORDER BY id
