-- The W3C trace a run belongs to (32 hex digits): the `traceparent` of the request that
-- created it, or a new one. Every step, on any process and after a replay, sends it
-- upstream, so one trace follows the run from the webhook to each upstream call.
ALTER TABLE runs ADD COLUMN trace_id TEXT;
