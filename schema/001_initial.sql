-- 001_initial.sql - the first spool index schema.
-- Applied inside one transaction when PRAGMA user_version < 1.

CREATE TABLE messages (
    id            TEXT PRIMARY KEY,            -- 16 hex chars, also the file name
    account       TEXT NOT NULL,
    uidl          TEXT NOT NULL,
    size          INTEGER NOT NULL,            -- octets of the spool file
    digest        TEXT NOT NULL,               -- sha256 hex of the spool file
    sender        TEXT NOT NULL,               -- '' is the null sender <>
    state         TEXT NOT NULL DEFAULT 'queued'
                  CHECK (state IN ('queued', 'sending', 'sent', 'deferred', 'held')),
    attempts      INTEGER NOT NULL DEFAULT 0,
    next_attempt  INTEGER NOT NULL DEFAULT 0,  -- unix time
    last_reply    TEXT,
    created       INTEGER NOT NULL,            -- unix time of the commit
    updated       INTEGER NOT NULL,
    UNIQUE (account, uidl)
);

CREATE INDEX messages_due ON messages (state, next_attempt);

CREATE TABLE recipients (
    msg_id     TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    addr       TEXT NOT NULL,
    state      TEXT NOT NULL DEFAULT 'queued'
               CHECK (state IN ('queued', 'sending', 'sent', 'deferred', 'held')),
    last_reply TEXT,
    PRIMARY KEY (msg_id, addr)
);

CREATE TABLE accounts (
    name         TEXT PRIMARY KEY,
    last_poll    INTEGER,
    last_result  TEXT,
    last_fetched INTEGER NOT NULL DEFAULT 0
);
