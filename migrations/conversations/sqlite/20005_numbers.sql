-- Whole-number aliases of conversations and messages, for APIs whose clients declare integer
-- ids (seeds 001 and 004). Assigned in creation order; new rows get MAX + 1 in their INSERT.
ALTER TABLE conversations ADD COLUMN number BIGINT;
UPDATE conversations SET number = (
    SELECT COUNT(*) FROM conversations c
    WHERE c.created_at < conversations.created_at OR (c.created_at = conversations.created_at AND c.id <= conversations.id)
);
CREATE UNIQUE INDEX IF NOT EXISTS conversations_by_number ON conversations (number);

ALTER TABLE messages ADD COLUMN number BIGINT;
UPDATE messages SET number = (
    SELECT COUNT(*) FROM messages m
    WHERE m.created_at < messages.created_at OR (m.created_at = messages.created_at AND m.id <= messages.id)
);
CREATE UNIQUE INDEX IF NOT EXISTS messages_by_number ON messages (number);
