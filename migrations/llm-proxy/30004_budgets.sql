-- Completions of models without a price: their cost is unknown, which reports must not show
-- as free.
ALTER TABLE usage_rollups ADD COLUMN unpriced_requests BIGINT NOT NULL DEFAULT 0;
-- Reports of one tenant over a range.
CREATE INDEX IF NOT EXISTS usage_rollups_by_tenant_hour ON usage_rollups (system_id, hour);

-- Spend and token ceilings per tenant, user or API key, per day, month or in total, set
-- through UsageService (the configuration file's budgets live in the file, not here).
CREATE TABLE IF NOT EXISTS budgets (
    id              TEXT    PRIMARY KEY,
    scope           TEXT    NOT NULL,
    system_id       TEXT    NOT NULL,
    subject         TEXT    NOT NULL,
    period          TEXT    NOT NULL,
    max_cost_micros BIGINT,
    max_tokens      BIGINT,
    warn_percent    INTEGER NOT NULL,
    updated_at      BIGINT  NOT NULL
);
