-- What changed on stored messages (issue 16): edits, deletions, and reactions added or
-- taken back, in the order they were committed. Written only by the nodes of a cluster,
-- so that a node that missed bus messages (NATS gone, a slow subscription) replays
-- them from the database (`live/catchup.rs`); rows older than a day are removed.
-- `direct` is 1 for a private message; `user_id` and `emoji` are a reaction's.
CREATE TABLE message_changes (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         BIGINT NOT NULL,
    message_id BIGINT NOT NULL,
    direct     BIGINT NOT NULL,
    kind       TEXT   NOT NULL CHECK (kind IN ('edit', 'delete', 'react', 'unreact')),
    user_id    BIGINT,
    emoji      TEXT
);
CREATE INDEX message_changes_by_time ON message_changes (at);
