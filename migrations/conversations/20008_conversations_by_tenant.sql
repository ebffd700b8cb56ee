-- A tenant's conversations across its users, newest first (the history page, service keys).
CREATE INDEX IF NOT EXISTS conversations_by_tenant ON conversations (system_id, updated_at DESC, id DESC);
