-- 007_claim_owner.sql - which relay handle holds a `sending` message.
-- claim is the name of the claiming handle's journal file in the spool
-- root ("relay.<random>.journal"); the handle holds an exclusive flock on
-- that file for as long as it lives.  A handle that can take the lock (or
-- finds no file) knows the claimer is dead, so its claims can be taken back
-- while other processes keep the spool open (spool_reclaim).  NULL for a
-- message not in `sending`, and for claims made before this version (only
-- the recovery of an exclusive spool_open takes those back).
ALTER TABLE messages ADD COLUMN claim TEXT;
