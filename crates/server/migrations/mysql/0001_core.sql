-- Salon core schema (MySQL/MariaDB). Same tables as the SQLite schema. Text is utf8mb4 so
-- 4-byte characters (emoji) are stored exactly; the *_key columns use a binary collation
-- so that uniqueness is exactly the server's Unicode lowercasing, as on the other backends
-- (the default collations would also fold accents: 'général' = 'general').
-- No TEXT columns: MySQL reports TEXT as BLOB and sqlx's runtime-generic driver then
-- refuses to read it as a string; VARCHAR sizes hold the server's limits instead
-- (messages: at most 16000 characters, enforced by the configuration check).
CREATE TABLE users (
    id            BIGINT       NOT NULL PRIMARY KEY,
    username      VARCHAR(64)  NOT NULL,
    username_key  VARCHAR(64)  CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL UNIQUE,
    alias         VARCHAR(64)  NOT NULL,
    alias_key     VARCHAR(64)  CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL UNIQUE,
    first_name    VARCHAR(128) NOT NULL,
    last_name     VARCHAR(128) NOT NULL,
    password_hash VARCHAR(255) NOT NULL,
    is_admin      BIGINT       NOT NULL DEFAULT 0,
    status        VARCHAR(16)  NOT NULL DEFAULT 'online',
    created_at    BIGINT       NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE TABLE rooms (
    id         BIGINT      NOT NULL PRIMARY KEY,
    name       VARCHAR(64) NOT NULL,
    name_key   VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL UNIQUE,
    policy     VARCHAR(16) NOT NULL CHECK (policy IN ('everyone', 'open', 'request', 'private')),
    created_by BIGINT,
    created_at BIGINT      NOT NULL,
    FOREIGN KEY (created_by) REFERENCES users (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE TABLE memberships (
    room_id   BIGINT NOT NULL,
    user_id   BIGINT NOT NULL,
    joined_at BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id),
    INDEX memberships_by_user (user_id),
    FOREIGN KEY (room_id) REFERENCES rooms (id),
    FOREIGN KEY (user_id) REFERENCES users (id)
) ENGINE = InnoDB;

CREATE TABLE join_requests (
    room_id      BIGINT      NOT NULL,
    user_id      BIGINT      NOT NULL,
    state        VARCHAR(16) NOT NULL CHECK (state IN ('pending', 'accepted', 'rejected')),
    requested_at BIGINT      NOT NULL,
    decided_at   BIGINT,
    decided_by   BIGINT,
    reason       VARCHAR(2000),
    notified     BIGINT      NOT NULL DEFAULT 0,
    PRIMARY KEY (room_id, user_id),
    INDEX join_requests_by_state (state, requested_at),
    INDEX join_requests_by_user (user_id),
    FOREIGN KEY (room_id) REFERENCES rooms (id),
    FOREIGN KEY (user_id) REFERENCES users (id),
    FOREIGN KEY (decided_by) REFERENCES users (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE TABLE messages (
    id         BIGINT NOT NULL PRIMARY KEY,
    room_id    BIGINT NOT NULL,
    author_id  BIGINT NOT NULL,
    body       VARCHAR(16000) NOT NULL,
    created_at BIGINT NOT NULL,
    INDEX messages_by_room (room_id, id),
    FOREIGN KEY (room_id) REFERENCES rooms (id),
    FOREIGN KEY (author_id) REFERENCES users (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE TABLE direct_messages (
    id           BIGINT NOT NULL PRIMARY KEY,
    sender_id    BIGINT NOT NULL,
    recipient_id BIGINT NOT NULL,
    user_lo      BIGINT NOT NULL,
    user_hi      BIGINT NOT NULL,
    body         VARCHAR(16000) NOT NULL,
    created_at   BIGINT NOT NULL,
    delivered    BIGINT NOT NULL DEFAULT 0,
    INDEX direct_by_conversation (user_lo, user_hi, id),
    INDEX direct_undelivered (recipient_id, delivered, id),
    INDEX direct_by_user_hi (user_hi, user_lo, id),
    FOREIGN KEY (sender_id) REFERENCES users (id),
    FOREIGN KEY (recipient_id) REFERENCES users (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- Resumable sessions (reconnect without the password). Only a hash of the token is
-- stored, so a database leak does not leak usable tokens.
CREATE TABLE session_tokens (
    token_hash VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    user_id    BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    INDEX session_tokens_by_user (user_id),
    FOREIGN KEY (user_id) REFERENCES users (id)
) ENGINE = InnoDB;

-- Kicks and bans (R18): at most one of each kind per user. The account and its messages
-- are never deleted by a sanction.
CREATE TABLE sanctions (
    user_id    BIGINT      NOT NULL,
    kind       VARCHAR(8)  NOT NULL CHECK (kind IN ('kick', 'ban')),
    ends_at    BIGINT,
    reason     VARCHAR(2000) NOT NULL,
    created_by VARCHAR(64) NOT NULL,
    created_at BIGINT      NOT NULL,
    PRIMARY KEY (user_id, kind),
    FOREIGN KEY (user_id) REFERENCES users (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- Administrative actions (R19). Ids are time-ordered (src/ids.rs).
CREATE TABLE audit_log (
    id     BIGINT       NOT NULL PRIMARY KEY,
    ts     BIGINT       NOT NULL,
    actor  VARCHAR(64)  NOT NULL,
    action VARCHAR(32)  NOT NULL,
    target VARCHAR(200) NOT NULL,
    reason VARCHAR(16000) NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

INSERT INTO rooms (id, name, name_key, policy, created_at) VALUES
    (1, 'Général', 'général', 'everyone', 0),
    (2, 'Blabla', 'blabla', 'open', 0),
    (3, 'Comptabilité', 'comptabilité', 'request', 0),
    (4, 'Informatique', 'informatique', 'request', 0),
    (5, 'Marketing', 'marketing', 'request', 0);
