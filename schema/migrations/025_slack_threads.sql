-- Slack threads -> agent conversation memory, so a follow-up in a thread keeps its context
-- across restarts of `serve` / `otel-ai slack`. One row per update; the newest row per key wins.
CREATE TABLE IF NOT EXISTS slack_threads
(
    key String,
    channel String,
    thread_ts String,
    conversation String,
    updated DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(updated)
ORDER BY key
