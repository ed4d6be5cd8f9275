-- Who joined or left which room (issue 16): a `join`, a `leave`, an accepted request.
-- Written only by the nodes of a cluster, in the change's own transaction, so that a
-- node that missed bus messages tells its sessions the `room_member` notices again
-- (`live/catchup.rs`); `id` is the server-made id the live notice carries, so a
-- session is told each once. Rows older than a day are removed.
CREATE TABLE member_changes (
    id      BIGINT NOT NULL PRIMARY KEY,
    at      BIGINT NOT NULL,
    room_id BIGINT NOT NULL,
    user_id BIGINT NOT NULL,
    joined  BIGINT NOT NULL,
    INDEX member_changes_by_time (at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
