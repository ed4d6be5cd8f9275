-- Full-text search (issue 14). The server folds each message's words (accents and case
-- removed, `src/search_text.rs`) and stores them beside the message, keyed by its id,
-- under an InnoDB FULLTEXT index. The text itself stays in the message.
--
-- The index is made without InnoDB's stop-word list (English words such as "a", "de",
-- "la", "en" that French users do search for). InnoDB does not index words shorter than
-- `innodb_ft_min_token_size` (3 by default): docs/OPERATIONS.md says how to lower it.
SET SESSION innodb_ft_enable_stopword = 0;

CREATE TABLE messages_search (
    id    BIGINT NOT NULL PRIMARY KEY,
    words TEXT   NOT NULL,
    FULLTEXT INDEX messages_search_words (words)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
CREATE TABLE direct_search (
    id    BIGINT NOT NULL PRIMARY KEY,
    words TEXT   NOT NULL,
    FULLTEXT INDEX direct_search_words (words)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Messages stored before this migration (ids up to `up_to`) are indexed when the
-- database is next migrated (`salon serve` and `salon migrate` do it), in batches from
-- the id after `after_id`; a row is removed when its table is done. Messages stored
-- after it are indexed as they are stored.
CREATE TABLE search_backfill (
    source   VARCHAR(16) NOT NULL PRIMARY KEY,
    after_id BIGINT      NOT NULL,
    up_to    BIGINT      NOT NULL
) ENGINE = InnoDB;
INSERT INTO search_backfill (source, after_id, up_to)
    SELECT 'room', 0, COALESCE(MAX(id), 0) FROM messages;
INSERT INTO search_backfill (source, after_id, up_to)
    SELECT 'direct', 0, COALESCE(MAX(id), 0) FROM direct_messages;

CREATE INDEX messages_by_author ON messages (author_id, id);
