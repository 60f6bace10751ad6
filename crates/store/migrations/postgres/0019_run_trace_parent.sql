-- An expand step. The span a run's steps are children of, and whether its trace is sampled
-- (`<16 hex digits>-<2 hex flags>`): the run's enqueue span, so every step on any process,
-- after a crash or a replay, joins the request that created the run in one trace. Runs
-- made before this column join their trace unsampled.
ALTER TABLE runs ADD COLUMN trace_parent TEXT;
