-- Full-text search (issue 14). The server folds each message's words (accents and case
-- removed, `src/search_text.rs`) and stores them in a contentless FTS5 index: the text
-- itself stays in `messages.body`, the index holds only its terms, keyed by message id
-- (the rowid). `contentless_delete` lets an edit or a deletion take a row out. Prefix
-- indexes for 2 and 3 characters serve searches as people type.
--
-- `scope` says who may read the message, as tokens the server makes: `r<room id>`, or
-- `u<sender id> u<recipient id>`. A search of someone in a few rooms, or of private
-- messages, asks the index for its scope too, so the engine intersects the two lists
-- instead of walking every match of a frequent word through other people's messages.
-- (The search still checks the membership or the conversation on the message itself.)
CREATE VIRTUAL TABLE messages_search USING fts5 (
    words,
    scope,
    content = '',
    contentless_delete = 1,
    tokenize = 'unicode61 remove_diacritics 0',
    prefix = '2 3'
);
CREATE VIRTUAL TABLE direct_search USING fts5 (
    words,
    scope,
    content = '',
    contentless_delete = 1,
    tokenize = 'unicode61 remove_diacritics 0',
    prefix = '2 3'
);

-- Messages stored before this migration (ids up to `up_to`) are indexed when the
-- database is next migrated (`salon serve` and `salon migrate` do it), in batches from
-- the id after `after_id`; a row is removed when its table is done. Messages stored
-- after it are indexed as they are stored.
CREATE TABLE search_backfill (
    source   TEXT    NOT NULL PRIMARY KEY,
    after_id INTEGER NOT NULL,
    up_to    INTEGER NOT NULL
);
INSERT INTO search_backfill (source, after_id, up_to)
    SELECT 'room', 0, COALESCE(MAX(id), 0) FROM messages;
INSERT INTO search_backfill (source, after_id, up_to)
    SELECT 'direct', 0, COALESCE(MAX(id), 0) FROM direct_messages;

-- Filters on the author of room messages (a search for what someone said).
CREATE INDEX messages_by_author ON messages (author_id, id);
