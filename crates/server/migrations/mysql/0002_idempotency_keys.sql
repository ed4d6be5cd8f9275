-- Idempotency keys (exactly-once effects for retries): a client may tag a message with a
-- key of its choosing; a retry with the same key by the same author finds the message
-- already stored instead of storing it twice. NULL for messages sent without a key (a
-- unique index admits any number of NULLs). Keys are unique per author among room
-- messages, and per sender among private messages.
-- VARBINARY, not VARCHAR: MariaDB's and MySQL's non-UCA collations are PAD SPACE, so
-- 'k' and 'k ' would be the same key; and a case-insensitive collation would make 'K'
-- and 'k' the same. Binary strings compare byte for byte. (Keys are printable ASCII
-- without spaces anyway: the server checks.)
ALTER TABLE messages ADD COLUMN client_key VARBINARY(64) NULL;
CREATE UNIQUE INDEX messages_by_author_key ON messages (author_id, client_key);

ALTER TABLE direct_messages ADD COLUMN client_key VARBINARY(64) NULL;
CREATE UNIQUE INDEX direct_by_sender_key ON direct_messages (sender_id, client_key);
