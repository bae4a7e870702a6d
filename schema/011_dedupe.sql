-- 011_dedupe.sql - duplicate detection that survives a UIDL change.
--
-- A message whose content this account already spooled within dedupe_days
-- is committed in the new state 'duplicate', naming the original in
-- duplicate_of; it is never relayed (unless requeued).  SQLite cannot
-- change a CHECK constraint in place, so `messages` is rebuilt with the
-- same columns plus duplicate_of (the documented create-copy-drop-rename
-- procedure; spool.c runs migrations with foreign keys off, so dropping
-- the old table does not cascade into recipients, bodies, history or
-- retained).
CREATE TABLE messages_new (
    id            TEXT PRIMARY KEY,
    account       TEXT NOT NULL,
    uidl          TEXT NOT NULL,
    size          INTEGER NOT NULL,
    digest        TEXT NOT NULL,               -- sha256 hex of the spool file
    sender        TEXT NOT NULL,
    state         TEXT NOT NULL DEFAULT 'queued'
                  CHECK (state IN ('queued', 'sending', 'sent', 'deferred', 'held',
                                   'duplicate')),
    attempts      INTEGER NOT NULL DEFAULT 0,
    next_attempt  INTEGER NOT NULL DEFAULT 0,
    last_reply    TEXT,
    created       INTEGER NOT NULL,
    updated       INTEGER NOT NULL,
    in_index      INTEGER NOT NULL DEFAULT 0,
    eightbit      INTEGER,
    claim         TEXT,
    listed_size   INTEGER,
    duplicate_of  TEXT,                        -- state 'duplicate': the original's id
    UNIQUE (account, uidl)
);
INSERT INTO messages_new (id, account, uidl, size, digest, sender, state, attempts,
                          next_attempt, last_reply, created, updated, in_index, eightbit,
                          claim, listed_size)
    SELECT id, account, uidl, size, digest, sender, state, attempts, next_attempt,
           last_reply, created, updated, in_index, eightbit, claim, listed_size
    FROM messages ORDER BY rowid;
DROP TABLE messages;
ALTER TABLE messages_new RENAME TO messages;
CREATE INDEX messages_due ON messages (state, next_attempt);

-- The content keys of the messages each account spooled (not of the
-- duplicates): sha256 of the message as the server sent it, line ends
-- normalised to CRLF, without popgate's Received line (kind 0, 'exact'),
-- and, when it has a Message-ID, sha256 of Message-ID + body (kind 1,
-- 'message').  messages.digest covers popgate's own header, so rows from
-- before this version have no key: they are not recognised.
-- Two tables of the same shape, each one B-tree (WITHOUT ROWID) whose key
-- is the lookup: a commit inserts into the small dedupe_new; about once a
-- day (or at 50,000 rows) the poller merges it into dedupe in one
-- transaction and prunes keys older than dedupe_days.  Inserting hash keys
-- at random places of a large B-tree would dirty most of its pages in
-- every group commit; the small table keeps a poll's cost independent of
-- the history (docs/performance.md).  A lookup searches both.
CREATE TABLE dedupe (
    account  TEXT NOT NULL,
    kind     INTEGER NOT NULL,                 -- 0 exact, 1 message
    key      BLOB NOT NULL,                    -- 32 octets
    created  INTEGER NOT NULL,                 -- unix time of the commit
    msg_id   TEXT NOT NULL,
    PRIMARY KEY (account, kind, key, created, msg_id)
) WITHOUT ROWID;
CREATE TABLE dedupe_new (
    account  TEXT NOT NULL,
    kind     INTEGER NOT NULL,
    key      BLOB NOT NULL,
    created  INTEGER NOT NULL,
    msg_id   TEXT NOT NULL,
    PRIMARY KEY (account, kind, key, created, msg_id)
) WITHOUT ROWID;
-- A Bloom filter of the keys in dedupe (10 bits a key, 7 probes: about 1 %
-- false positives), rebuilt in the transaction of every merge or prune, the
-- only changes to dedupe: a key it excludes is searched in dedupe_new only.
-- gen grows with every rebuild; a handle reloads the bits when it changed.
CREATE TABLE dedupe_bloom (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    gen   INTEGER NOT NULL,
    bits  BLOB NOT NULL
);
