-- Everyday messaging (issue 13): replies, edits, deletions, mentions, reactions, read
-- state and notification levels.
--
-- A reply names the message it answers (in the same room or conversation); a thread is
-- every message replying to one. `edited_at` is the last edit; a deletion empties `body`
-- and sets `deleted_at` (the row stays as a tombstone). `mention_room` is `@room`.
ALTER TABLE messages
    ADD COLUMN reply_to BIGINT NULL,
    ADD COLUMN edited_at BIGINT NULL,
    ADD COLUMN deleted_at BIGINT NULL,
    ADD COLUMN mention_room BIGINT NOT NULL DEFAULT 0;
CREATE INDEX messages_by_reply ON messages (reply_to, id);
CREATE INDEX messages_mentioning_room ON messages (room_id, mention_room, id);

ALTER TABLE direct_messages
    ADD COLUMN reply_to BIGINT NULL,
    ADD COLUMN edited_at BIGINT NULL,
    ADD COLUMN deleted_at BIGINT NULL;
CREATE INDEX direct_by_reply ON direct_messages (reply_to, id);

-- Members mentioned by `@alias` in a room message (as sent), for unread mention counts.
CREATE TABLE mentions (
    user_id    BIGINT NOT NULL,
    message_id BIGINT NOT NULL,
    PRIMARY KEY (user_id, message_id),
    INDEX mentions_by_message (message_id)
) ENGINE = InnoDB;

-- Reactions to room and private messages (message ids are unique across both tables).
-- A binary collation: the Unicode collations weigh many emoji the same.
CREATE TABLE reactions (
    message_id BIGINT NOT NULL,
    user_id    BIGINT NOT NULL,
    emoji      VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (message_id, emoji, user_id),
    FOREIGN KEY (user_id) REFERENCES users (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Read state: the last message a member read in a room, and their notification level
-- there; the last message a user read from each correspondent.
ALTER TABLE memberships
    ADD COLUMN last_read BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN notify VARCHAR(16) NOT NULL DEFAULT 'all' CHECK (notify IN ('all', 'mentions', 'none'));
CREATE TABLE direct_reads (
    user_id   BIGINT NOT NULL,
    peer_id   BIGINT NOT NULL,
    last_read BIGINT NOT NULL,
    PRIMARY KEY (user_id, peer_id)
) ENGINE = InnoDB;

-- What was there before the upgrade counts as read.
UPDATE memberships SET last_read =
    (SELECT COALESCE(MAX(id), 0) FROM messages WHERE messages.room_id = memberships.room_id);
INSERT INTO direct_reads (user_id, peer_id, last_read)
    SELECT recipient_id, sender_id, MAX(id) FROM direct_messages
    GROUP BY recipient_id, sender_id;
