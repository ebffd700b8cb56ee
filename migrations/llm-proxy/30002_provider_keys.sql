-- Provider keys users bring (seed 004), AES-256-GCM encrypted with SWITCHBOARD_ENCRYPTION_KEY,
-- with their usage.
CREATE TABLE IF NOT EXISTS provider_keys (
    id                TEXT    PRIMARY KEY,
    system_id         TEXT    NOT NULL,
    user_id           TEXT    NOT NULL,
    provider          TEXT    NOT NULL,
    label             TEXT    NOT NULL,
    sealed            TEXT    NOT NULL,
    last_four         TEXT    NOT NULL,
    created_at        BIGINT  NOT NULL,
    requests          BIGINT  NOT NULL DEFAULT 0,
    prompt_tokens     BIGINT  NOT NULL DEFAULT 0,
    completion_tokens BIGINT  NOT NULL DEFAULT 0,
    cost_micros       BIGINT  NOT NULL DEFAULT 0,
    last_used_at      BIGINT
);
CREATE INDEX IF NOT EXISTS provider_keys_by_owner ON provider_keys (system_id, user_id, provider, created_at);
