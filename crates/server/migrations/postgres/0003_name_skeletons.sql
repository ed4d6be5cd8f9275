-- Names that look alike are one name (issue 10): the server computes each username's,
-- alias's and room name's UTS #39 skeleton (`names::skeleton`: NFKC, lower case,
-- confusable characters mapped to one prototype, accents and separators removed) and
-- stores it here, one row per key, so the database itself refuses a second name that
-- looks like the first, however many registrations race. Usernames and aliases share
-- the scope `user` (one namespace); rooms and channels have `room`.
CREATE TABLE name_skeletons (
    scope    TEXT   NOT NULL CHECK (scope IN ('user', 'room')),
    skeleton TEXT   NOT NULL,
    owner    BIGINT NOT NULL,
    PRIMARY KEY (scope, skeleton)
);
CREATE INDEX name_skeletons_by_owner ON name_skeletons (scope, owner);
