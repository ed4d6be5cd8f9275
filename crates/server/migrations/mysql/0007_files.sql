-- Files attached to messages (issue 14). A file is its stored bytes, named by their
-- SHA-256 (`sha256`, hex) under the files directory, with what the server found in them:
-- `mime` is sniffed from the content (never the upload's name or header); `name` is the
-- sanitised display name (never used in a path). An image is stored re-encoded (no
-- EXIF/GPS), with its size in pixels and a thumbnail (`preview_sha256`). Identical
-- content is stored once: several rows may name one blob.
-- `attached_at` is when a message first carried it; until then only its uploader reads it.
CREATE TABLE files (
    id             BIGINT       NOT NULL PRIMARY KEY,
    uploader_id    BIGINT       NOT NULL,
    sha256         CHAR(64)     CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    size           BIGINT       NOT NULL,
    mime           VARCHAR(128) NOT NULL,
    name           VARCHAR(255) NOT NULL,
    width          BIGINT       NULL,
    height         BIGINT       NULL,
    preview_sha256 CHAR(64)     CHARACTER SET ascii COLLATE ascii_bin NULL,
    created_at     BIGINT       NOT NULL,
    attached_at    BIGINT       NULL,
    INDEX files_by_uploader (uploader_id),
    INDEX files_by_sha (sha256),
    INDEX files_by_preview (preview_sha256),
    FOREIGN KEY (uploader_id) REFERENCES users (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- Which files a message carries, in order (room and private messages: ids are unique
-- across both tables). A deletion removes its message's rows.
CREATE TABLE attachments (
    message_id BIGINT NOT NULL,
    file_id    BIGINT NOT NULL,
    position   BIGINT NOT NULL,
    PRIMARY KEY (message_id, position),
    INDEX attachments_by_file (file_id)
) ENGINE = InnoDB;
