-- Keys compare exactly (issue 10): utf8mb4_bin is a PAD SPACE collation, under which
-- 'injuser   ' = 'injuser', so a login or a name with trailing spaces found the account.
-- The key columns move to a NO PAD binary collation: utf8mb4_nopad_bin on MariaDB
-- (10.2 and later), utf8mb4_0900_bin on MySQL (8.0.17 and later). Their UNIQUE indexes
-- are kept.
SET @salon_nopad = IF(VERSION() LIKE '%MariaDB%', 'utf8mb4_nopad_bin', 'utf8mb4_0900_bin');

SET @salon_sql = CONCAT(
    'ALTER TABLE users',
    ' MODIFY username_key VARCHAR(64) CHARACTER SET utf8mb4 COLLATE ', @salon_nopad, ' NOT NULL,',
    ' MODIFY alias_key VARCHAR(64) CHARACTER SET utf8mb4 COLLATE ', @salon_nopad, ' NOT NULL');
PREPARE salon_alter FROM @salon_sql;
EXECUTE salon_alter;
DEALLOCATE PREPARE salon_alter;

SET @salon_sql = CONCAT(
    'ALTER TABLE rooms',
    ' MODIFY name_key VARCHAR(64) CHARACTER SET utf8mb4 COLLATE ', @salon_nopad, ' NOT NULL');
PREPARE salon_alter FROM @salon_sql;
EXECUTE salon_alter;
DEALLOCATE PREPARE salon_alter;
