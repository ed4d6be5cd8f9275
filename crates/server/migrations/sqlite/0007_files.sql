-- Files attached to messages (issue 14). A file is its stored bytes, named by their
-- SHA-256 (`sha256`, hex) under the files directory, with what the server found in them:
-- `mime` is sniffed from the content (never the upload's name or header); `name` is the
-- sanitised display name (never used in a path). An image is stored re-encoded (no
-- EXIF/GPS), with its size in pixels and a thumbnail (`preview_sha256`). Identical
-- content is stored once: several rows may name one blob.
-- `attached_at` is when a message first carried it; until then only its uploader reads it.
CREATE TABLE files (
    id             INTEGER NOT NULL PRIMARY KEY,
    uploader_id    INTEGER NOT NULL REFERENCES users (id),
    sha256         TEXT    NOT NULL,
    size           INTEGER NOT NULL,
    mime           TEXT    NOT NULL,
    name           TEXT    NOT NULL,
    width          INTEGER,
    height         INTEGER,
    preview_sha256 TEXT,
    created_at     INTEGER NOT NULL,
    attached_at    INTEGER
);
CREATE INDEX files_by_uploader ON files (uploader_id);
CREATE INDEX files_by_sha ON files (sha256);
CREATE INDEX files_by_preview ON files (preview_sha256);

-- Which files a message carries, in order (room and private messages: ids are unique
-- across both tables). A deletion removes its message's rows.
CREATE TABLE attachments (
    message_id INTEGER NOT NULL,
    file_id    INTEGER NOT NULL,
    position   INTEGER NOT NULL,
    PRIMARY KEY (message_id, position)
);
CREATE INDEX attachments_by_file ON attachments (file_id);
