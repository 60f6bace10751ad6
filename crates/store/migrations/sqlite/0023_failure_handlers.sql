-- An expand step. A failure-handler run (a workflow's `on_failure` steps) names the dead run
-- it handles; NULL for every other run. It is created in the transaction that makes that
-- run dead, with the idempotency key `failure:<run>:<lease epoch>`, so each death makes at
-- most one, and a handler's own death makes none.
ALTER TABLE runs ADD COLUMN handles TEXT;
