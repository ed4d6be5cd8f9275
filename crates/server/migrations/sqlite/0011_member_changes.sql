-- Who joined or left which room (issue 16): a `join`, a `leave`, an accepted request.
-- Written only by the nodes of a cluster, in the change's own transaction, so that a
-- node that missed bus messages tells its sessions the `room_member` notices again
-- (`live/catchup.rs`); `id` is the server-made id the live notice carries, so a
-- session is told each once. Rows older than a day are removed. A cluster never runs
-- on SQLite: the table is here so every database has one schema.
CREATE TABLE member_changes (
    id      INTEGER PRIMARY KEY,
    at      INTEGER NOT NULL,
    room_id INTEGER NOT NULL,
    user_id INTEGER NOT NULL,
    joined  INTEGER NOT NULL
);
CREATE INDEX member_changes_by_time ON member_changes (at);
