-- Everyday messaging (issue 13): replies, edits, deletions, mentions, reactions, read
-- state and notification levels.
--
-- A reply names the message it answers (in the same room or conversation); a thread is
-- every message replying to one. `edited_at` is the last edit; a deletion empties `body`
-- and sets `deleted_at` (the row stays as a tombstone). `mention_room` is `@room`.
ALTER TABLE messages ADD COLUMN reply_to INTEGER;
ALTER TABLE messages ADD COLUMN edited_at INTEGER;
ALTER TABLE messages ADD COLUMN deleted_at INTEGER;
ALTER TABLE messages ADD COLUMN mention_room INTEGER NOT NULL DEFAULT 0;
CREATE INDEX messages_by_reply ON messages (reply_to, id) WHERE reply_to IS NOT NULL;
CREATE INDEX messages_mentioning_room ON messages (room_id, id) WHERE mention_room = 1;

ALTER TABLE direct_messages ADD COLUMN reply_to INTEGER;
ALTER TABLE direct_messages ADD COLUMN edited_at INTEGER;
ALTER TABLE direct_messages ADD COLUMN deleted_at INTEGER;
CREATE INDEX direct_by_reply ON direct_messages (reply_to, id) WHERE reply_to IS NOT NULL;

-- Members mentioned by `@alias` in a room message (as sent), for unread mention counts.
CREATE TABLE mentions (
    user_id    INTEGER NOT NULL,
    message_id INTEGER NOT NULL,
    PRIMARY KEY (user_id, message_id)
);
CREATE INDEX mentions_by_message ON mentions (message_id);

-- Reactions to room and private messages (message ids are unique across both tables).
CREATE TABLE reactions (
    message_id INTEGER NOT NULL,
    user_id    INTEGER NOT NULL REFERENCES users (id),
    emoji      TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (message_id, emoji, user_id)
);

-- Read state: the last message a member read in a room, and their notification level
-- there; the last message a user read from each correspondent.
ALTER TABLE memberships ADD COLUMN last_read INTEGER NOT NULL DEFAULT 0;
ALTER TABLE memberships ADD COLUMN notify TEXT NOT NULL DEFAULT 'all'
    CHECK (notify IN ('all', 'mentions', 'none'));
CREATE TABLE direct_reads (
    user_id   INTEGER NOT NULL,
    peer_id   INTEGER NOT NULL,
    last_read INTEGER NOT NULL,
    PRIMARY KEY (user_id, peer_id)
);

-- What was there before the upgrade counts as read.
UPDATE memberships SET last_read =
    (SELECT COALESCE(MAX(id), 0) FROM messages WHERE messages.room_id = memberships.room_id);
INSERT INTO direct_reads (user_id, peer_id, last_read)
    SELECT recipient_id, sender_id, MAX(id) FROM direct_messages
    GROUP BY recipient_id, sender_id;
