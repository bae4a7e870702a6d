-- 008_problem_uidls.sql - messages that must not block a mailbox (issue 12).
-- Space-separated UIDLs of the account's messages whose RETR broke a
-- session (connection lost or out of step mid-message) or was over its
-- size limit.  The poller fetches them only when nothing else is to be
-- fetched or deleted, so one bad message never stops the rest of the
-- mailbox from draining; a UIDL leaves the list once its message is
-- spooled or gone from the server.  NULL: none.
ALTER TABLE accounts ADD COLUMN problem_uidls TEXT;
