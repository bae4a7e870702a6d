-- 002_account_state.sql - per-account poll state for scheduling and status.

ALTER TABLE accounts ADD COLUMN last_bytes INTEGER NOT NULL DEFAULT 0;
-- no scheduled poll before this unix time (LOGIN-DELAY, backoff); 0: any time
ALTER TABLE accounts ADD COLUMN not_before INTEGER NOT NULL DEFAULT 0;
-- consecutive failed polls (drives the backoff)
ALTER TABLE accounts ADD COLUMN failures INTEGER NOT NULL DEFAULT 0;
-- NULL, or the fingerprint of the account's configuration when the server
-- refused its credentials ([AUTH]): no scheduled poll until it changes
ALTER TABLE accounts ADD COLUMN auth_failed TEXT;
ALTER TABLE accounts ADD COLUMN last_error TEXT;
-- what the server announced in CAPA: LOGIN-DELAY seconds, EXPIRE days
-- (-2 for NEVER), NULL when not announced
ALTER TABLE accounts ADD COLUMN login_delay INTEGER;
ALTER TABLE accounts ADD COLUMN expire INTEGER;
