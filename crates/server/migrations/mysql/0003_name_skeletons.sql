-- Names that look alike are one name (issue 10): the server computes each username's,
-- alias's and room name's UTS #39 skeleton (`names::skeleton`: NFKC, lower case,
-- confusable characters mapped to one prototype, accents and separators removed) and
-- stores it here, one row per key, so the database itself refuses a second name that
-- looks like the first, however many registrations race. Usernames and aliases share
-- the scope `user` (one namespace); rooms and channels have `room`.
-- VARBINARY: compared byte for byte, without the trailing-space padding of the
-- utf8mb4 collations (MariaDB's and MySQL's `_bin` collations are PAD SPACE).
CREATE TABLE name_skeletons (
    scope    VARCHAR(8)     NOT NULL CHECK (scope IN ('user', 'room')),
    skeleton VARBINARY(255) NOT NULL,
    owner    BIGINT         NOT NULL,
    PRIMARY KEY (scope, skeleton),
    INDEX name_skeletons_by_owner (scope, owner)
) ENGINE = InnoDB;

-- The login keys too: with PAD SPACE, 'alice   ' matched 'alice' (a login spelling
-- nobody registered, and a new bucket for every guess). Binary, they match exactly.
ALTER TABLE users
    MODIFY username_key VARBINARY(255) NOT NULL,
    MODIFY alias_key    VARBINARY(255) NOT NULL;
ALTER TABLE rooms
    MODIFY name_key VARBINARY(255) NOT NULL;
