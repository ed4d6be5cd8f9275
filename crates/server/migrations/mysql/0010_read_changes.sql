-- Whose read state changed (issue 16): a `mark_read` or `set_notify`, in the order
-- committed. Written only by the nodes of a cluster, so that a node that missed bus
-- messages tells its sessions of those users their read state again
-- (`live/catchup.rs`); rows older than a day are removed.
CREATE TABLE read_changes (
    id      BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    at      BIGINT NOT NULL,
    user_id BIGINT NOT NULL,
    INDEX read_changes_by_time (at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
