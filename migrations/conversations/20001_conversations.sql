-- Conversations, messages and usage records of the conversation service.
-- Times are Unix milliseconds; ids are UUIDv7 text.
CREATE TABLE IF NOT EXISTS conversations (
    id            TEXT    PRIMARY KEY,
    system_id     TEXT    NOT NULL,
    user_id       TEXT    NOT NULL,
    title         TEXT    NOT NULL DEFAULT '',
    upstream_id   TEXT,
    created_at    BIGINT  NOT NULL,
    updated_at    BIGINT  NOT NULL,
    message_count BIGINT  NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS conversations_by_owner ON conversations (system_id, user_id, updated_at DESC, id DESC);

CREATE TABLE IF NOT EXISTS messages (
    id                TEXT    PRIMARY KEY,
    conversation_id   TEXT    NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    role              TEXT    NOT NULL,
    content           TEXT    NOT NULL,
    status            TEXT    NOT NULL,
    model             TEXT    NOT NULL DEFAULT '',
    prompt_tokens     BIGINT  NOT NULL DEFAULT 0,
    completion_tokens BIGINT  NOT NULL DEFAULT 0,
    error             TEXT    NOT NULL DEFAULT '',
    created_at        BIGINT  NOT NULL,
    updated_at        BIGINT  NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages (conversation_id, created_at, id);
CREATE INDEX IF NOT EXISTS messages_in_progress ON messages (status, updated_at) WHERE status = 'in_progress';

CREATE TABLE IF NOT EXISTS usage_records (
    id                TEXT    PRIMARY KEY,
    system_id         TEXT    NOT NULL,
    user_id           TEXT    NOT NULL,
    conversation_id   TEXT    NOT NULL,
    message_id        TEXT    NOT NULL,
    key_id            TEXT    NOT NULL DEFAULT '',
    model             TEXT    NOT NULL,
    provider          TEXT    NOT NULL,
    prompt_tokens     BIGINT  NOT NULL,
    completion_tokens BIGINT  NOT NULL,
    latency_ms        BIGINT  NOT NULL,
    cost_micros       BIGINT  NOT NULL DEFAULT 0,
    created_at        BIGINT  NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_by_owner ON usage_records (system_id, user_id, created_at);
