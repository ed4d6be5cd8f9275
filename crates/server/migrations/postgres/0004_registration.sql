-- Registration the company controls (issue 10). `approved` = 0 while an account waits
-- for an administrator (registration = approval); such an account cannot log in.
-- Invitations (registration = invite) are single-use: only a BLAKE2s hash of the code is
-- stored, like session tokens; `used_by` is set in the registration's own transaction.
ALTER TABLE users ADD COLUMN approved BIGINT NOT NULL DEFAULT 1;
CREATE TABLE invites (
    id         BIGINT PRIMARY KEY,
    code_hash  TEXT   NOT NULL UNIQUE,
    created_by BIGINT NOT NULL REFERENCES users (id),
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_by    BIGINT,
    used_at    BIGINT
);
