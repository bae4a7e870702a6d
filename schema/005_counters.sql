-- 005_counters.sql - monotonic counters for metrics and `popgate status`
-- (messages fetched and relayed, bytes, poll results by account and reason).
-- Kept in the index so they survive restarts and every process (the daemon,
-- a `poll --once` from a timer) adds to the same figures.

CREATE TABLE counters (
    name     TEXT NOT NULL,               -- e.g. 'fetched', 'relay_sent', 'polls'
    account  TEXT NOT NULL DEFAULT '',    -- '' when not per account
    reason   TEXT NOT NULL DEFAULT '',    -- poll result class, '' otherwise
    value    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (name, account, reason)
);
