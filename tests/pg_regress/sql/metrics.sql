-- usage_metrics (counted by memmie's functions, folded by fold_usage), record_api_call,
-- user_usage and rollup_metrics (provider_metrics).
BEGIN;
CREATE TEMP TABLE m (name text PRIMARY KEY, id uuid);
SELECT id FROM memmie.register_provider('{"id": "meter", "name": "Meter", "version": "1",
    "trigger_events": ["blob.created", "blob.updated"], "supported_types": ["text/plain"]}');
-- what other tests left to fold is folded first, so the counts below are this file's
SELECT memmie.fold_usage() >= 0 AS folded_before;

-- five changes of one user: 3 blobs created (one hard-deleted), 2 more versions
INSERT INTO m SELECT 'a', (memmie.create_blob('00000000-0000-0000-0000-0000000000c1', 'alpha', 'text/plain')).id;
INSERT INTO m SELECT 'b', (memmie.create_blob('00000000-0000-0000-0000-0000000000c1', 'beta', 'text/plain')).id;
INSERT INTO m SELECT 'c', (memmie.create_blob('00000000-0000-0000-0000-0000000000c1', 'gamma', 'image/png')).id;
SELECT (memmie.update_content((SELECT id FROM m WHERE name = 'b'), 'beta 2')).version;
SELECT (memmie.apply_delta((SELECT id FROM m WHERE name = 'b'), '[{"op": "add", "path": "/tags/-", "value": "x"}]')).to_version;
SELECT memmie.delete_blob((SELECT id FROM m WHERE name = 'c'), hard => true);
-- a failed change counts nothing
SELECT t.err(format($$SELECT memmie.apply_delta(%L, '[{"op": "test", "path": "/tags", "value": []}]')$$,
                    (SELECT id FROM m WHERE name = 'b'))) AS failed_patch;
SELECT count(*) AS increments_waiting FROM memmie.usage_increments WHERE user_id = '00000000-0000-0000-0000-0000000000c1';

-- the provider runs on a and b: a succeeds with a child, b fails once (retried) and then for good
SELECT memmie.dispatch_events(100) > 0 AS dispatched;
SELECT count(*) AS claimed FROM memmie.claim_jobs('mw', 10, job_types => ARRAY['memmie.process']);
SELECT p.id AS pa FROM memmie.provider_processing p JOIN m ON m.id = p.blob_id WHERE m.name = 'a' \gset
SELECT p.id AS pb FROM memmie.provider_processing p JOIN m ON m.id = p.blob_id WHERE m.name = 'b' \gset
SELECT count(*) AS children FROM memmie.complete_processing(:'pa', 'mw', '{"children": [{"content": "ALPHA", "content_type": "text/plain"}]}');
SELECT (memmie.fail_processing(:'pb', 'mw', 'timeout: after 30 s')).status;
UPDATE memmie.jobs SET run_after = now() WHERE id = :'pb';
SELECT count(*) AS claimed_again FROM memmie.claim_jobs('mw', 10, job_types => ARRAY['memmie.process']);
SELECT (memmie.fail_processing(:'pb', 'mw', 'bad output: not JSON', retryable => false)).status;

-- user_usage folds first: exact at once
SELECT sum(blobs_created) AS blobs_created, sum(blobs_processed) AS blobs_processed,
       sum(deltas_applied) AS deltas_applied, sum(api_calls) AS api_calls,
       memmie._add_counts('{}', jsonb_agg(provider_invocations) -> 0) AS invocations,
       bool_and(total_processing_time_ms >= 0) AS timed
FROM memmie.user_usage('00000000-0000-0000-0000-0000000000c1');
SELECT u.storage_bytes_used = c.storage_used AS storage_is_the_users
FROM memmie.user_usage('00000000-0000-0000-0000-0000000000c1') u
JOIN t.users_now c ON c.user_id = u.user_id ORDER BY u.metric_date DESC LIMIT 1;
SELECT count(*) AS increments_left FROM memmie.usage_increments WHERE user_id = '00000000-0000-0000-0000-0000000000c1';
SELECT memmie.fold_usage() AS nothing_to_fold;

-- record_api_call: calls, errors, the day's average response time
SELECT memmie.record_api_call('00000000-0000-0000-0000-0000000000c1', true, 10);
SELECT memmie.record_api_call('00000000-0000-0000-0000-0000000000c1', false, 20);
SELECT memmie.fold_usage() AS folded;
SELECT memmie.record_api_call('00000000-0000-0000-0000-0000000000c1', true, 31);
SELECT api_calls, api_errors, average_response_time_ms, total_response_time_ms
FROM memmie.user_usage('00000000-0000-0000-0000-0000000000c1') ORDER BY metric_date DESC LIMIT 1;
-- a user seen first through the API
SELECT memmie.record_api_call('00000000-0000-0000-0000-0000000000c2', true, 5);
SELECT api_calls, blobs_created, storage_bytes_used FROM memmie.user_usage('00000000-0000-0000-0000-0000000000c2');
SELECT t.err($$SELECT memmie.record_api_call(NULL, true, 1)$$) AS null_user;
SELECT t.err($$SELECT memmie.record_api_call('00000000-0000-0000-0000-0000000000c1', NULL, 1)$$) AS null_ok;
SELECT t.err($$SELECT memmie.record_api_call('00000000-0000-0000-0000-0000000000c1', true, -1)$$) AS negative_ms;
SELECT t.err($$SELECT memmie.user_usage(NULL)$$) AS usage_of_null;
SELECT count(*) AS other_range FROM memmie.user_usage('00000000-0000-0000-0000-0000000000c1', '2000-01-01', '2000-01-31');
-- a deleted user's waiting increments go with it
SELECT memmie.record_api_call('00000000-0000-0000-0000-0000000000c3', true, 5);
DELETE FROM memmie.user_contexts WHERE user_id = '00000000-0000-0000-0000-0000000000c3';
SELECT memmie.fold_usage() AS folded_gone_user;
SELECT count(*) AS rows_of_gone_user FROM memmie.usage_metrics WHERE user_id = '00000000-0000-0000-0000-0000000000c3';

-- rollup_metrics: one provider row for the day the processings finished (fixed times here)
INSERT INTO m SELECT 'd', (memmie.create_blob('00000000-0000-0000-0000-0000000000c1', 'delta', 'text/plain')).id;
INSERT INTO m SELECT 'e', (memmie.create_blob('00000000-0000-0000-0000-0000000000c1', 'epsilon', 'text/plain')).id;
SELECT memmie.dispatch_events(100) > 0 AS dispatched;
SELECT count(*) AS claimed FROM memmie.claim_jobs('mw', 10, job_types => ARRAY['memmie.process']);
SELECT count(*) AS children
FROM memmie.provider_processing p JOIN m ON m.id = p.blob_id,
     LATERAL memmie.complete_processing(p.id, 'mw', '{"children": [{"content": "X", "content_type": "text/plain"}]}') c
WHERE m.name = 'd';
SELECT (memmie.fail_processing(p.id, 'mw', 'timeout: again', retryable => false)).status
FROM memmie.provider_processing p JOIN m ON m.id = p.blob_id WHERE m.name = 'e';
UPDATE memmie.provider_processing p
SET completed_at = '2000-01-15 12:00:00+00',
    processing_time_ms = CASE m.name WHEN 'a' THEN 100 WHEN 'd' THEN 300 WHEN 'b' THEN 50 ELSE 70 END
FROM m WHERE m.id = p.blob_id AND p.provider_id = 'meter';
SELECT m.name, p.status, p.attempt_count, p.input_size, p.output_size, p.error_message
FROM memmie.provider_processing p JOIN m ON m.id = p.blob_id WHERE p.provider_id = 'meter' ORDER BY 1;
SELECT memmie.rollup_metrics('2000-01-15') AS provider_rows;
SELECT provider_id, total_invocations, successful_invocations, failed_invocations, latency_p50,
       latency_p95, latency_p99, total_input_bytes, total_output_bytes, total_processing_time_ms,
       error_counts
FROM memmie.provider_metrics WHERE metric_date = '2000-01-15';
-- a re-run gives the same rows (same ids)
CREATE TEMP TABLE before AS SELECT * FROM memmie.provider_metrics WHERE metric_date = '2000-01-15';
SELECT memmie.rollup_metrics('2000-01-15') AS provider_rows_again;
SELECT count(*) AS changed_rows FROM (
    SELECT * FROM before EXCEPT SELECT * FROM memmie.provider_metrics WHERE metric_date = '2000-01-15') x;
-- the day boundary is UTC midnight, whatever the session's time zone
SET LOCAL TimeZone = 'Pacific/Kiritimati';
UPDATE memmie.provider_processing p SET completed_at = '2000-01-15 23:59:59+00'
FROM m WHERE m.id = p.blob_id AND m.name = 'e';
SELECT memmie.rollup_metrics('2000-01-15') AS same_day_in_utc;
SELECT total_invocations FROM memmie.provider_metrics WHERE metric_date = '2000-01-15';
-- a day whose processings are gone loses its rows
UPDATE memmie.provider_processing SET completed_at = '2000-01-16 00:00:00+00' WHERE provider_id = 'meter';
SELECT memmie.rollup_metrics('2000-01-15') AS provider_rows_left;
SELECT count(*) AS rows_for_the_day FROM memmie.provider_metrics WHERE metric_date = '2000-01-15';
SELECT memmie.rollup_metrics('2000-01-16') AS next_day;
SELECT t.err($$SELECT memmie.rollup_metrics(NULL)$$) AS null_day;
SELECT memmie.rollup_metrics() >= 0 AS today_by_default;
SELECT check_name, ok FROM memmie.check() WHERE NOT ok;
ROLLBACK;
