-- Whose read state changed (issue 16): a `mark_read` or `set_notify`, in the order
-- committed. Written only by the nodes of a cluster, so that a node that missed bus
-- messages tells its sessions of those users their read state again
-- (`live/catchup.rs`); rows older than a day are removed.
CREATE TABLE read_changes (
    id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at      BIGINT NOT NULL,
    user_id BIGINT NOT NULL
);
CREATE INDEX read_changes_by_time ON read_changes (at);
