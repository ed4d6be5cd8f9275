-- Whose read state changed (issue 16): a `mark_read` or `set_notify`, in the order
-- committed. Written only by the nodes of a cluster, so that a node that missed bus
-- messages tells its sessions of those users their read state again
-- (`live/catchup.rs`); rows older than a day are removed. A cluster never runs on
-- SQLite: the table is here so every database has one schema.
CREATE TABLE read_changes (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    user_id INTEGER NOT NULL
);
CREATE INDEX read_changes_by_time ON read_changes (at);
