-- An idempotency key in progress belongs to one turn (`holder`) until `lease_until` (Unix ms):
-- only its holder stores the answer or releases it, and a claim whose holder died is taken
-- over after its lease instead of answering 409 for a day.
ALTER TABLE idempotency_keys ADD COLUMN holder TEXT NOT NULL DEFAULT '';
ALTER TABLE idempotency_keys ADD COLUMN lease_until BIGINT NOT NULL DEFAULT 0;
