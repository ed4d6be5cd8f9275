-- Full-text search (issue 14). The server folds each message's words (accents and case
-- removed, `src/search_text.rs`); the index keeps them as a `tsvector` made with the
-- `simple` configuration (no stemming, no stop words: the words people typed), beside
-- the message, keyed by its id, under a GIN index. The text itself stays in the message.
--
-- `scope` says who may read the message, as words the server makes: `r<room id>`, or
-- `u<sender id> u<recipient id>`. A search of someone in a few rooms, or of private
-- messages, asks for its scope too, so the GIN index intersects the two lists instead
-- of reading every match of a frequent word in other people's messages. (The search
-- still checks the membership or the conversation on the message itself.)
CREATE TABLE messages_search (
    id    BIGINT   NOT NULL PRIMARY KEY,
    words TSVECTOR NOT NULL,
    scope TSVECTOR NOT NULL
);
CREATE INDEX messages_search_words ON messages_search USING GIN (words, scope);
CREATE TABLE direct_search (
    id    BIGINT   NOT NULL PRIMARY KEY,
    words TSVECTOR NOT NULL,
    scope TSVECTOR NOT NULL
);
CREATE INDEX direct_search_words ON direct_search USING GIN (words, scope);

-- Messages stored before this migration (ids up to `up_to`) are indexed when the
-- database is next migrated (`salon serve` and `salon migrate` do it), in batches from
-- the id after `after_id`; a row is removed when its table is done. Messages stored
-- after it are indexed as they are stored.
CREATE TABLE search_backfill (
    source   VARCHAR(16) NOT NULL PRIMARY KEY,
    after_id BIGINT      NOT NULL,
    up_to    BIGINT      NOT NULL
);
INSERT INTO search_backfill (source, after_id, up_to)
    SELECT 'room', 0, COALESCE(MAX(id), 0) FROM messages;
INSERT INTO search_backfill (source, after_id, up_to)
    SELECT 'direct', 0, COALESCE(MAX(id), 0) FROM direct_messages;

CREATE INDEX messages_by_author ON messages (author_id, id);
