-- Salon core schema (PostgreSQL). Ids are made by the server (see src/ids.rs) except the
-- five default rooms. Times are UTC milliseconds since the Unix epoch. Case-insensitive
-- uniqueness uses *_key columns holding the Unicode-lowercased value.
CREATE TABLE users (
    id            BIGINT PRIMARY KEY,
    username      TEXT    NOT NULL,
    username_key  TEXT    NOT NULL UNIQUE,
    alias         TEXT    NOT NULL,
    alias_key     TEXT    NOT NULL UNIQUE,
    first_name    TEXT    NOT NULL,
    last_name     TEXT    NOT NULL,
    password_hash TEXT    NOT NULL,
    is_admin      BIGINT  NOT NULL DEFAULT 0,
    status        TEXT    NOT NULL DEFAULT 'online',
    created_at    BIGINT  NOT NULL
);

CREATE TABLE rooms (
    id         BIGINT PRIMARY KEY,
    name       TEXT    NOT NULL,
    name_key   TEXT    NOT NULL UNIQUE,
    policy     TEXT    NOT NULL CHECK (policy IN ('everyone', 'open', 'request', 'private')),
    created_by BIGINT  REFERENCES users (id),
    created_at BIGINT  NOT NULL
);

CREATE TABLE memberships (
    room_id   BIGINT  NOT NULL REFERENCES rooms (id),
    user_id   BIGINT  NOT NULL REFERENCES users (id),
    joined_at BIGINT  NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX memberships_by_user ON memberships (user_id);

-- The current join request of a user for a room; re-asking after a rejection reuses the
-- row. The decision history is in the audit log.
CREATE TABLE join_requests (
    room_id      BIGINT  NOT NULL REFERENCES rooms (id),
    user_id      BIGINT  NOT NULL REFERENCES users (id),
    state        TEXT    NOT NULL CHECK (state IN ('pending', 'accepted', 'rejected')),
    requested_at BIGINT  NOT NULL,
    decided_at   BIGINT,
    decided_by   BIGINT  REFERENCES users (id),
    reason       TEXT,
    -- 1 once the requester has been told the decision.
    notified     BIGINT  NOT NULL DEFAULT 0,
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX join_requests_by_state ON join_requests (state, requested_at);
CREATE INDEX join_requests_by_user ON join_requests (user_id);

CREATE TABLE messages (
    id         BIGINT PRIMARY KEY,
    room_id    BIGINT  NOT NULL REFERENCES rooms (id),
    author_id  BIGINT  NOT NULL REFERENCES users (id),
    body       TEXT    NOT NULL,
    created_at BIGINT  NOT NULL
);
CREATE INDEX messages_by_room ON messages (room_id, id);

-- user_lo/user_hi name the conversation whoever sent, so one index serves its history.
CREATE TABLE direct_messages (
    id           BIGINT PRIMARY KEY,
    sender_id    BIGINT  NOT NULL REFERENCES users (id),
    recipient_id BIGINT  NOT NULL REFERENCES users (id),
    user_lo      BIGINT  NOT NULL,
    user_hi      BIGINT  NOT NULL,
    body         TEXT    NOT NULL,
    created_at   BIGINT  NOT NULL,
    delivered    BIGINT  NOT NULL DEFAULT 0
);
CREATE INDEX direct_by_conversation ON direct_messages (user_lo, user_hi, id);
CREATE INDEX direct_undelivered ON direct_messages (recipient_id, delivered, id);
-- A user's conversations are found from either side (see `conversations`).
CREATE INDEX direct_by_user_hi ON direct_messages (user_hi, user_lo, id);

-- Resumable sessions (reconnect without the password). Only a hash of the token is
-- stored, so a database leak does not leak usable tokens.
CREATE TABLE session_tokens (
    token_hash TEXT    NOT NULL PRIMARY KEY,
    user_id    BIGINT  NOT NULL REFERENCES users (id),
    created_at BIGINT  NOT NULL,
    expires_at BIGINT  NOT NULL
);
CREATE INDEX session_tokens_by_user ON session_tokens (user_id);

-- Kicks and bans (R18): at most one of each kind per user. The account and its messages
-- are never deleted by a sanction.
CREATE TABLE sanctions (
    user_id    BIGINT  NOT NULL REFERENCES users (id),
    kind       TEXT    NOT NULL CHECK (kind IN ('kick', 'ban')),
    ends_at    BIGINT ,
    reason     TEXT    NOT NULL,
    created_by TEXT    NOT NULL,
    created_at BIGINT  NOT NULL,
    PRIMARY KEY (user_id, kind)
);

-- Administrative actions (R19). Ids are time-ordered (src/ids.rs).
CREATE TABLE audit_log (
    id     BIGINT  PRIMARY KEY,
    ts     BIGINT  NOT NULL,
    actor  TEXT    NOT NULL,
    action TEXT    NOT NULL,
    target TEXT    NOT NULL,
    reason TEXT    NOT NULL
);

INSERT INTO rooms (id, name, name_key, policy, created_at) VALUES
    (1, 'Général', 'général', 'everyone', 0),
    (2, 'Blabla', 'blabla', 'open', 0),
    (3, 'Comptabilité', 'comptabilité', 'request', 0),
    (4, 'Informatique', 'informatique', 'request', 0),
    (5, 'Marketing', 'marketing', 'request', 0);
