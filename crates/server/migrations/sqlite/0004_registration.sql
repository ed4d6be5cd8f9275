-- Registration the company controls (issue 10). `approved` = 0 while an account waits
-- for an administrator (registration = approval); such an account cannot log in.
-- Invitations (registration = invite) are single-use: only a BLAKE2s hash of the code is
-- stored, like session tokens; `used_by` is set in the registration's own transaction.
ALTER TABLE users ADD COLUMN approved INTEGER NOT NULL DEFAULT 1;
CREATE TABLE invites (
    id         INTEGER PRIMARY KEY,
    code_hash  TEXT    NOT NULL UNIQUE,
    created_by INTEGER NOT NULL REFERENCES users (id),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_by    INTEGER,
    used_at    INTEGER
);
