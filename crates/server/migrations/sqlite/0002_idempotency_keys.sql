-- Idempotency keys (exactly-once effects for retries): a client may tag a message with a
-- key of its choosing; a retry with the same key by the same author finds the message
-- already stored instead of storing it twice. NULL for messages sent without a key.
-- Keys are unique per author among room messages, and per sender among private
-- messages. Partial indexes: rows without a key cost nothing.
ALTER TABLE messages ADD COLUMN client_key TEXT;
CREATE UNIQUE INDEX messages_by_author_key ON messages (author_id, client_key)
    WHERE client_key IS NOT NULL;

ALTER TABLE direct_messages ADD COLUMN client_key TEXT;
CREATE UNIQUE INDEX direct_by_sender_key ON direct_messages (sender_id, client_key)
    WHERE client_key IS NOT NULL;
