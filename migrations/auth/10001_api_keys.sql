-- Issued API keys. Only a SHA-256 digest of the secret part is stored.
CREATE TABLE IF NOT EXISTS api_keys (
    id           TEXT    PRIMARY KEY,
    digest       TEXT    NOT NULL,
    prefix       TEXT    NOT NULL,
    client_name  TEXT    NOT NULL,
    system_id    TEXT    NOT NULL DEFAULT '',
    scope        TEXT    NOT NULL,
    created_at   BIGINT  NOT NULL,
    expires_at   BIGINT,
    revoked_at   BIGINT,
    last_used_at BIGINT
);
CREATE INDEX IF NOT EXISTS api_keys_by_system ON api_keys (system_id, created_at);
