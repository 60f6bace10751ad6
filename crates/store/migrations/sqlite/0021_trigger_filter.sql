-- An expand step. A trigger's filter: a predicate (JSON text, see
-- crates/model/src/predicate.rs) over what the trigger delivers. A delivery or tick it does
-- not match creates no run and costs nothing. NULL: every one matches.
ALTER TABLE triggers ADD COLUMN filter TEXT;
