-- Upstream (Dify) ids, so that a sync upserts instead of duplicating.
ALTER TABLE messages ADD COLUMN upstream_id TEXT;
CREATE UNIQUE INDEX IF NOT EXISTS messages_by_upstream_id ON messages (conversation_id, upstream_id);
CREATE UNIQUE INDEX IF NOT EXISTS conversations_by_upstream_id ON conversations (system_id, user_id, upstream_id);
