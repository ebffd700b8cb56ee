-- Users with passwords (argon2id), profiles (seed 001) and revoked JWTs (logout).
CREATE TABLE IF NOT EXISTS users (
    id             TEXT    PRIMARY KEY,
    system_id      TEXT    NOT NULL,
    username       TEXT    NOT NULL,
    username_lower TEXT    NOT NULL,
    password_hash  TEXT    NOT NULL,
    created_at     BIGINT  NOT NULL,
    CONSTRAINT users_username_key UNIQUE (system_id, username_lower)
);

CREATE TABLE IF NOT EXISTS profiles (
    system_id  TEXT    NOT NULL,
    user_id    TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    email      TEXT    NOT NULL,
    created_at BIGINT  NOT NULL,
    updated_at BIGINT  NOT NULL,
    PRIMARY KEY (system_id, user_id)
);

CREATE TABLE IF NOT EXISTS revoked_tokens (
    jti        TEXT    PRIMARY KEY,
    expires_at BIGINT  NOT NULL
);
CREATE INDEX IF NOT EXISTS revoked_tokens_by_expiry ON revoked_tokens (expires_at);
