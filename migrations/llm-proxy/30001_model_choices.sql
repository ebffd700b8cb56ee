-- Each principal's current model (seed 000: GET/POST /model).
CREATE TABLE IF NOT EXISTS model_choices (
    system_id  TEXT    NOT NULL,
    user_id    TEXT    NOT NULL,
    model      TEXT    NOT NULL,
    updated_at BIGINT  NOT NULL,
    PRIMARY KEY (system_id, user_id)
);
