-- Completions rolled up per principal, API key, model and hour, written in batches by the
-- LLM proxy (every completion passes through it: chat turns and OpenAI-compatible calls).
CREATE TABLE IF NOT EXISTS usage_rollups (
    system_id         TEXT    NOT NULL,
    user_id           TEXT    NOT NULL,
    key_id            TEXT    NOT NULL,
    model             TEXT    NOT NULL,
    hour              BIGINT  NOT NULL,
    requests          BIGINT  NOT NULL,
    prompt_tokens     BIGINT  NOT NULL,
    completion_tokens BIGINT  NOT NULL,
    cost_micros       BIGINT  NOT NULL,
    PRIMARY KEY (system_id, user_id, key_id, model, hour)
);
CREATE INDEX IF NOT EXISTS usage_rollups_by_hour ON usage_rollups (hour);
