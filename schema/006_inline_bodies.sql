-- 006_inline_bodies.sql - a small message lives in the index only.
-- in_index = 1: the message's one copy is its row of `bodies` (made durable
-- by the group's transaction); there is no msg/<id> file and the relay
-- reads the row.  Before this version such messages also had an unsynced
-- msg/<id> copy; recovery removes those copies.
ALTER TABLE messages ADD COLUMN in_index INTEGER NOT NULL DEFAULT 0;
-- 1 when an octet of the message is over 127 (sent with BODY=8BITMIME),
-- 0 when none is, NULL when not known (rows from before this version:
-- the relay reads the message to find out).
ALTER TABLE messages ADD COLUMN eightbit INTEGER;
UPDATE messages SET in_index = 1 WHERE id IN (SELECT msg_id FROM bodies);
-- the boot id only served the copies
DELETE FROM meta WHERE key = 'boot_id';
-- A queued message's fetch is no longer a history row (it is `created`);
-- a message held at fetch keeps its row, as state 'fetched-held'.  The
-- fetch row was a message's first, written in its commit (at = created);
-- messages spooled before version 3 have none, so both tests apply.
UPDATE history SET state = 'fetched-held' WHERE state = 'held' AND rowid IN
    (SELECT MIN(h.rowid) FROM history h GROUP BY h.msg_id) AND
    at = (SELECT created FROM messages m WHERE m.id = history.msg_id);
DELETE FROM history WHERE state = 'queued' AND reply = 'fetched' AND rowid IN
    (SELECT MIN(h.rowid) FROM history h GROUP BY h.msg_id) AND
    at = (SELECT created FROM messages m WHERE m.id = history.msg_id);
