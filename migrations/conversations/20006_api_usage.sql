-- Requests per principal and endpoint (seed 001's API usage table), counted in memory and
-- written in batches off the request path.
CREATE TABLE IF NOT EXISTS api_usage (
    system_id       TEXT    NOT NULL,
    user_id         TEXT    NOT NULL,
    endpoint        TEXT    NOT NULL,
    request_count   BIGINT  NOT NULL,
    last_request_at BIGINT  NOT NULL,
    created_at      BIGINT  NOT NULL,
    PRIMARY KEY (system_id, user_id, endpoint)
);
