-- Whole-number aliases of conversations and messages, for APIs whose clients declare integer
-- ids (seeds 001 and 004). Taken from a sequence on insert.
ALTER TABLE conversations ADD COLUMN IF NOT EXISTS number BIGSERIAL;
CREATE UNIQUE INDEX IF NOT EXISTS conversations_by_number ON conversations (number);
ALTER TABLE messages ADD COLUMN IF NOT EXISTS number BIGSERIAL;
CREATE UNIQUE INDEX IF NOT EXISTS messages_by_number ON messages (number);
