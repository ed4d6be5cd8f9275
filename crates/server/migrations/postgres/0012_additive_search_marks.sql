-- Words of messages stored before a combining mark belonged to the word it follows
-- (an accent typed as a character of its own, "e" then U+0301, as macOS writes; an
-- Indic vowel sign or virama): such a text was indexed as broken words ("ge ne ral"), so
-- "general" did not find it. Those messages are indexed again when the database is next
-- migrated (`salon serve` and `salon migrate` do it), in batches from the id after
-- `after_id` (`store::search`, `Pass::Marks`: only texts holding a combining mark are
-- indexed again); a row is removed when its table is done. Messages stored after it are
-- indexed with the new rule as they are stored. Additive: a previous version ignores
-- these rows.
INSERT INTO search_backfill (source, after_id, up_to)
    SELECT 'room_marks', 0, COALESCE(MAX(id), 0) FROM messages;
INSERT INTO search_backfill (source, after_id, up_to)
    SELECT 'direct_marks', 0, COALESCE(MAX(id), 0) FROM direct_messages;
