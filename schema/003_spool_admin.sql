-- 003_spool_admin.sql - inline bodies (group commit), state history,
-- retention of sent files, tombstones of deleted messages, spool metadata.

-- Small messages (the whole message fits the writer's 64 KiB buffer) are
-- made durable here, inside the group's one fsync'd transaction; msg/<id>
-- is then a copy for the relay, written without fsync and rewritten from
-- this row by recovery after a reboot.  The row goes when the file goes.
CREATE TABLE bodies (
    msg_id  TEXT PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
    body    BLOB NOT NULL
);

-- Every state a message entered, with the reply or reason (popgate show).
CREATE TABLE history (
    msg_id  TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    at      INTEGER NOT NULL,           -- unix time
    state   TEXT NOT NULL,
    reply   TEXT
);
CREATE INDEX history_msg ON history (msg_id);

-- Files of sent messages kept for audit (keep_sent_days): removed once
-- `until` has passed, by the relay round or recovery.
CREATE TABLE retained (
    msg_id  TEXT PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
    until   INTEGER NOT NULL
);
CREATE INDEX retained_until ON retained (until);

-- (account, uidl) of messages an operator deleted: never fetched again.
CREATE TABLE tombstones (
    account TEXT NOT NULL,
    uidl    TEXT NOT NULL,
    deleted INTEGER NOT NULL,
    PRIMARY KEY (account, uidl)
);

-- key/value: boot_id = the kernel boot id when recovery last checked the
-- inline copies (a new boot id means the page cache was lost).
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT
);
