-- What changed on stored messages (issue 16): edits, deletions, and reactions added or
-- taken back, in the order they were committed. Written only by the nodes of a cluster,
-- so that a node that missed bus messages (NATS gone, a slow subscription) replays
-- them from the database (`live/catchup.rs`); rows older than a day are removed.
-- `direct` is 1 for a private message; `user_id` and `emoji` are a reaction's.
CREATE TABLE message_changes (
    id         BIGINT      NOT NULL AUTO_INCREMENT PRIMARY KEY,
    at         BIGINT      NOT NULL,
    message_id BIGINT      NOT NULL,
    direct     BIGINT      NOT NULL,
    kind       VARCHAR(8)  CHARACTER SET ascii NOT NULL
               CHECK (kind IN ('edit', 'delete', 'react', 'unreact')),
    user_id    BIGINT      NULL,
    emoji      VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    INDEX message_changes_by_time (at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
