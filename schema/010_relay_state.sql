-- 010_relay_state.sql - the result of the last relay round, for `popgate
-- status` (a monitoring check must see that the mail host refused or could
-- not be reached).  One row, written after every round that had mail to
-- send or failed.
CREATE TABLE relay_state (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    last_run  INTEGER NOT NULL,            -- unix time the round ended
    result    TEXT NOT NULL,               -- 'ok' or the failure class
    attempted INTEGER NOT NULL DEFAULT 0,
    sent      INTEGER NOT NULL DEFAULT 0,
    deferred  INTEGER NOT NULL DEFAULT 0,
    held      INTEGER NOT NULL DEFAULT 0,
    bytes     INTEGER NOT NULL DEFAULT 0,
    error     TEXT                         -- NULL when result = 'ok'
);
