-- 009_listed_size.sql - the server's LIST size of a message when it was
-- fetched (octets as the server counts them, before our normalisation and
-- Received field; `size` is the spool file's).  Before deleting a message
-- it already has by UIDL, the poller compares the server's LIST size with
-- this: a different size means a non-compliant server reused the UIDL for
-- new mail, which is then fetched, not deleted (issue 12).  NULL: unknown
-- (rows from before this version, or a LIST size over 2^63-1).
ALTER TABLE messages ADD COLUMN listed_size INTEGER;
