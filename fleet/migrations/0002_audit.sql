-- The audit log: every change made through the API (and every refused or failed attempt),
-- who made it (the token's name), when, and the changed record's digests before and after.
-- A change's entry is written in the change's own transaction.
CREATE TABLE audit_log (
    id bigserial PRIMARY KEY,
    at_ms bigint NOT NULL,
    token text COLLATE "C" NOT NULL,
    entry json NOT NULL
);
CREATE INDEX audit_log_by_time ON audit_log (at_ms);
