-- What changed on stored messages (issue 16): edits, deletions, and reactions added or
-- taken back, in the order they were committed. Written only by the nodes of a cluster,
-- so that a node that missed bus messages (NATS gone, a slow subscription) replays
-- them from the database (`live/catchup.rs`); rows older than a day are removed. A
-- cluster never runs on SQLite: the table is here so every database has one schema.
-- `direct` is 1 for a private message; `user_id` and `emoji` are a reaction's.
CREATE TABLE message_changes (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         INTEGER NOT NULL,
    message_id INTEGER NOT NULL,
    direct     INTEGER NOT NULL,
    kind       TEXT    NOT NULL CHECK (kind IN ('edit', 'delete', 'react', 'unreact')),
    user_id    INTEGER,
    emoji      TEXT
);
CREATE INDEX message_changes_by_time ON message_changes (at);
