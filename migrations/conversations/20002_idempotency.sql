-- Idempotency keys of chat POSTs, per principal, kept 24 h. `response` is the hex-encoded
-- protobuf answer of a finished turn.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    system_id    TEXT    NOT NULL,
    user_id      TEXT    NOT NULL,
    key          TEXT    NOT NULL,
    request_hash TEXT    NOT NULL,
    status       TEXT    NOT NULL,
    response     TEXT,
    created_at   BIGINT  NOT NULL,
    PRIMARY KEY (system_id, user_id, key)
);
CREATE INDEX IF NOT EXISTS idempotency_keys_by_age ON idempotency_keys (created_at);
