-- Chat UI (chat/web) users and threads, written by its Chainlit data layer (chat/web/history.py).
-- Every update writes a whole new row with a larger `version`; readers take the newest row per id
-- (ORDER BY version DESC LIMIT 1 BY id, which stays exact on a sharded cluster) and skip
-- tombstones (`deleted = 1`). `conversation` is the agent's thread memory (Conversation.to_json()).
CREATE TABLE IF NOT EXISTS chat_users
(
    id String,
    identifier String,
    display_name String,
    metadata String,
    created_at DateTime64(3, 'UTC'),
    version UInt64,
    deleted UInt8 DEFAULT 0
)
ENGINE = ReplacingMergeTree(version)
ORDER BY identifier;

CREATE TABLE IF NOT EXISTS chat_threads
(
    id String,
    version UInt64,
    created_at DateTime64(3, 'UTC'),
    name String,
    user_id String,
    user_identifier String,
    tags Array(String),
    metadata String,
    conversation String,
    deleted UInt8 DEFAULT 0
)
ENGINE = ReplacingMergeTree(version)
ORDER BY id
