-- One turn at a time per conversation across replicas: the replica running a turn holds a
-- lease on the conversation, renewed while the turn runs.
ALTER TABLE conversations ADD COLUMN turn_lease_owner TEXT;
ALTER TABLE conversations ADD COLUMN turn_lease_until BIGINT;
