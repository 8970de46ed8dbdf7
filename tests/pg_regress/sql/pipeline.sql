-- The provider pipeline: dispatch_events, events_since, complete_processing, fail_processing,
-- reprocess, backfill, and the derivation depth limit.
BEGIN;
CREATE TEMP TABLE n (name text PRIMARY KEY, id uuid UNIQUE);
SELECT memmie._sequence_events() >= 0 AS sequenced_earlier_events;
SELECT coalesce(max(position), 0) AS start FROM memmie.events \gset
SELECT id FROM memmie.register_provider('{"id": "upper", "name": "Upper", "version": "1",
    "trigger_events": ["blob.created", "blob.updated"], "supported_types": ["text/plain", "text/x-upper"],
    "output_schema": {"type": "object", "properties": {"children": {"type": "array", "maxItems": 2}}}}');
SELECT id FROM memmie.register_provider('{"id": "words", "name": "Words", "version": "1",
    "trigger_events": ["blob.created"], "supported_types": ["text/x-upper"]}');
SELECT id FROM memmie.register_provider('{"id": "off", "name": "Off", "version": "1", "status": "inactive",
    "trigger_events": ["blob.created"], "supported_types": ["*/*"]}');
SELECT id FROM memmie.register_provider('{"id": "small", "name": "Small", "version": "1",
    "trigger_events": ["blob.created"], "max_input_size": 3}');
INSERT INTO n SELECT 'doc', (memmie.create_blob('00000000-0000-0000-0000-0000000000f1', 'hello world', 'text/plain', '{"title": "Doc"}')).id;
INSERT INTO n SELECT 'img', (memmie.create_blob('00000000-0000-0000-0000-0000000000f1', 'PNG', 'image/png')).id;

-- dispatch: one processing and one job per (blob, provider, version) that matches
SELECT memmie.dispatch_events(100) AS events_dispatched;
SELECT memmie.dispatch_events(100) AS nothing_left;
SELECT n.name, p.provider_id, p.provider_version, p.status, p.processed_version, p.input_size, p.metadata ->> 'event_type' AS event_type,
       j.status AS job_status, j.job_type, j.input ->> 'version' AS job_version
FROM memmie.provider_processing p JOIN n ON n.id = p.blob_id JOIN memmie.jobs j ON j.id = p.job_id
ORDER BY 1, 2;
SELECT count(*) AS unprocessed_events FROM memmie.events WHERE NOT processed;
SELECT t.err($$SELECT memmie.dispatch_events(0)$$) AS zero_events;

-- events_since: positions in commit order, from a cursor
SELECT e.position - :start AS pos, e.event_type, n.name FROM memmie.events_since(:start, 10) e JOIN n ON n.id = e.aggregate_id ORDER BY 1;
SELECT e.position - :start AS pos FROM memmie.events_since(:start + 1, 10) e;
SELECT t.err($$SELECT memmie.events_since(0, 0)$$) AS zero_max;
SELECT t.err($$SELECT memmie.events_since(NULL)$$) AS null_after;

-- claim the processings; complete one with a child and a patch of its input
SELECT count(*) AS claimed FROM memmie.claim_jobs('w1', 10, job_types => ARRAY['memmie.process']);
SELECT n.name, p.provider_id, p.status, p.attempt_count, p.started_at IS NOT NULL AS started
FROM memmie.provider_processing p JOIN n ON n.id = p.blob_id ORDER BY 1, 2;
SELECT id AS pid FROM memmie.provider_processing WHERE provider_id = 'upper' \gset
SELECT id AS small_pid FROM memmie.provider_processing WHERE provider_id = 'small' \gset
SELECT t.err(format($$SELECT memmie.complete_processing(%L, 'w2', '{}')$$, :'pid')) AS other_worker;
SELECT t.err(format($$SELECT memmie.complete_processing(%L, 'w1', '{"children": [{}, {}, {}]}')$$, :'pid')) AS output_schema;
SELECT t.err(format($$SELECT memmie.complete_processing(%L, 'w1', '{"extra": 1}')$$, :'pid')) AS unknown_output_key;
SELECT t.err(format($$SELECT memmie.complete_processing(%L, 'w1', '{"children": [{"content": "x"}]}')$$, :'pid')) AS no_content_type;
SELECT t.err(format($$SELECT memmie.complete_processing(%L, 'w1', '{"children": [{"content_type": "text/plain"}]}')$$, :'pid')) AS no_content;
SELECT t.err(format($$SELECT memmie.complete_processing(%L, 'w1', '{"children": [{"content_base64": "***", "content_type": "text/plain"}]}')$$, :'pid')) AS bad_base64;
SELECT t.err(format($$SELECT memmie.complete_processing(%L, 'w1', '{"patch": {"op": "add"}}')$$, :'pid')) AS patch_not_array;
SELECT t.err($$SELECT memmie.complete_processing('00000000-0000-0000-0000-00000000dead', 'w1', '{}')$$) AS missing_processing;
SELECT count(*) AS blobs_still FROM memmie.blobs;
INSERT INTO n SELECT 'up', c.id FROM memmie.complete_processing(:'pid', 'w1',
    '{"children": [{"content": "HELLO WORLD", "content_type": "text/x-upper", "transform_type": "upper",
                    "metadata": {"lang": "en"}, "tags": ["derived"]}],
      "patch": [{"op": "add", "path": "/metadata/shouted", "value": true}]}') c
WHERE c.created_by = 'upper';
SELECT b.version, b.content_type, b.depth, b.created_by, b.metadata, b.tags, convert_from(memmie.blob_content(b.id), 'UTF8') AS content
FROM memmie.blobs b JOIN n ON n.id = b.id WHERE n.name = 'up';
SELECT n.name, d.operation, d.provider_id, d.status, d.to_version,
       d.caused_by_delta_id = (SELECT v.delta_id FROM memmie.blob_versions v JOIN n x ON x.id = v.blob_id WHERE x.name = 'doc' AND v.version = 1) AS caused_by_input_v1,
       d.caused_by_event ->> 'processing_id' = :'pid' AS caused_by_processing
FROM memmie.deltas d JOIN n ON n.id = d.blob_id WHERE d.provider_id = 'upper' ORDER BY 1, 5;
SELECT b.version, b.metadata FROM memmie.blobs b JOIN n ON n.id = b.id WHERE n.name = 'doc';
SELECT p.status, p.processing_time_ms >= 0 AS timed, p.output_size, p.output_blob_id = (SELECT id FROM n WHERE name = 'up') AS output_blob,
       p.metadata ->> 'patch_status' AS patch_status, p.completed_at IS NOT NULL AS completed, j.status AS job_status
FROM memmie.provider_processing p JOIN memmie.jobs j ON j.id = p.job_id WHERE p.id = :'pid';
SELECT t.err(format($$SELECT memmie.complete_processing(%L, 'w1', '{}')$$, :'pid')) AS completed_twice;

-- the derived blob triggers the next provider (words), never the one that made it (upper)
SELECT memmie.dispatch_events(100) AS events_dispatched;
SELECT n.name, p.provider_id, p.processed_version, p.status FROM memmie.provider_processing p JOIN n ON n.id = p.blob_id ORDER BY 1, 2, 3;

-- the input changes: processing it again makes a new version of the same child, and the edge
-- records which input version produced which child version
SELECT (memmie.update_content((SELECT id FROM n WHERE name = 'doc'), 'hello again')).version;
SELECT memmie.dispatch_events(100) AS events_dispatched;
SELECT id AS pid2 FROM memmie.provider_processing WHERE provider_id = 'upper' AND processed_version = 3 \gset
SELECT count(*) AS claimed FROM memmie.claim_jobs('w1', 10, job_types => ARRAY['memmie.process']);
SELECT c.id = (SELECT id FROM n WHERE name = 'up') AS same_child, c.version
FROM memmie.complete_processing(:'pid2', 'w1', '{"children": [{"content": "HELLO AGAIN", "content_type": "text/x-upper", "transform_type": "upper"}]}') c;
SELECT b.version, convert_from(memmie.blob_content(b.id), 'UTF8') AS content, convert_from(memmie.blob_content(b.id, 1), 'UTF8') AS v1_content
FROM memmie.blobs b WHERE b.id = (SELECT id FROM n WHERE name = 'up');
SELECT e.version_map FROM memmie.blob_edges e WHERE e.child_blob_id = (SELECT id FROM n WHERE name = 'up');
SELECT count(*) AS children_of_doc FROM memmie.descendants((SELECT id FROM n WHERE name = 'doc'), 1);

-- a patch that no longer applies is recorded as a failed delta; the processing still completes
SELECT memmie.reprocess((SELECT id FROM n WHERE name = 'doc'), 'upper') = :'pid2' AS same_processing_queued_again;
SELECT status FROM memmie.provider_processing WHERE id = :'pid2';
SELECT count(*) AS claimed FROM memmie.claim_jobs('w1', 10, job_types => ARRAY['memmie.process']);
SELECT (memmie.apply_delta((SELECT id FROM n WHERE name = 'doc'), '[{"op": "remove", "path": "/metadata/shouted"}]')).to_version;
SELECT count(*) AS returned FROM memmie.complete_processing(:'pid2', 'w1',
    '{"patch": [{"op": "replace", "path": "/metadata/shouted", "value": false}]}');
SELECT d.status, d.error_message, d.operation FROM memmie.deltas d
WHERE d.blob_id = (SELECT id FROM n WHERE name = 'doc') AND d.status <> 'applied';
SELECT p.status, p.metadata ->> 'patch_status' AS patch_status, p.error_message FROM memmie.provider_processing p WHERE p.id = :'pid2';
SELECT b.version, memmie.blob_state(b.id) -> 'metadata' AS replayed_metadata FROM memmie.blobs b WHERE b.id = (SELECT id FROM n WHERE name = 'doc');

-- fail_processing: retried (pending again) while attempts are left, then failed
SELECT p.status, p.error_message FROM memmie.fail_processing(:'small_pid', 'w1', 'provider crashed') p;
SELECT status, retry_count, run_after > now() AS backing_off FROM memmie.jobs WHERE id = :'small_pid';
SELECT t.err(format($$SELECT memmie.fail_processing(%L, 'w1', 'again')$$, :'small_pid')) AS not_leased_now;
UPDATE memmie.jobs SET run_after = now() WHERE id = :'small_pid';
SELECT count(*) AS claimed FROM memmie.claim_jobs('w1', 10, job_types => ARRAY['memmie.process']);
SELECT p.status, p.attempt_count FROM memmie.fail_processing(:'small_pid', 'w1', 'bad input', retryable => false) p;
SELECT status, retry_count FROM memmie.jobs WHERE id = :'small_pid';

-- reprocess of a blob never processed by that provider queues a new processing
SELECT memmie.reprocess((SELECT id FROM n WHERE name = 'img'), 'words') IS NOT NULL AS queued;
SELECT count(*) FROM memmie.provider_processing WHERE provider_id = 'words' AND blob_id = (SELECT id FROM n WHERE name = 'img');
SELECT t.err($$SELECT memmie.reprocess('00000000-0000-0000-0000-00000000dead', 'upper')$$) AS missing_blob;
SELECT t.err(format($$SELECT memmie.reprocess(%L, 'nobody')$$, (SELECT id FROM n WHERE name = 'doc'))) AS missing_provider;

-- backfill: every matching blob not yet processed at its current version
SELECT id FROM memmie.register_provider('{"id": "late", "name": "Late", "version": "1", "trigger_events": ["blob.created"], "supported_types": ["text/*"]}');
SELECT memmie.backfill('late') AS queued;
SELECT memmie.backfill('late') AS queued_again;
SELECT n.name FROM memmie.provider_processing p JOIN n ON n.id = p.blob_id WHERE p.provider_id = 'late' ORDER BY 1;
SELECT t.err($$SELECT memmie.backfill('off')$$) AS inactive_provider;
SELECT t.err($$SELECT memmie.backfill('nobody')$$) AS missing_provider;

-- memmie.max_derivation_depth stops chains: blobs that deep trigger nothing
SET LOCAL memmie.max_derivation_depth = 1;
INSERT INTO n SELECT 'deep', (memmie.derive_blob(ARRAY[(SELECT id FROM n WHERE name = 'img')], 'tool', 'ocr', 'deep text', 'text/plain')).id;
SELECT memmie.dispatch_events(100) > 0 AS dispatched;
SELECT count(*) AS processings_of_deep FROM memmie.provider_processing WHERE blob_id = (SELECT id FROM n WHERE name = 'deep');
SELECT memmie.backfill('late') AS queued_with_depth_limit;
SET LOCAL memmie.max_derivation_depth = 2;
SELECT memmie.backfill('late') AS queued_below_new_limit;

-- a processing whose input was deleted meanwhile is skipped
SELECT count(*) AS claimed FROM memmie.claim_jobs('w1', 100, job_types => ARRAY['memmie.process']);
SELECT id AS late_pid FROM memmie.provider_processing WHERE provider_id = 'late' AND blob_id = (SELECT id FROM n WHERE name = 'doc') \gset
SELECT memmie.delete_blob((SELECT id FROM n WHERE name = 'doc'));
SELECT count(*) AS outputs FROM memmie.complete_processing(:'late_pid', 'w1', '{"children": [{"content": "x", "content_type": "text/plain"}]}');
SELECT p.status, p.error_message IS NOT NULL AS says_why, j.status AS job_status
FROM memmie.provider_processing p JOIN memmie.jobs j ON j.id = p.job_id WHERE p.id = :'late_pid';
-- hard-deleting a blob cancels the jobs of its processings (nobody could complete them)
SELECT id AS img_pid FROM memmie.provider_processing WHERE provider_id = 'words' AND blob_id = (SELECT id FROM n WHERE name = 'img') \gset
SELECT status FROM memmie.jobs WHERE id = :'img_pid';
SELECT memmie.delete_blob((SELECT id FROM n WHERE name = 'img'), true);
SELECT status, error_message LIKE 'processing of blob % was deleted' AS says_why FROM memmie.jobs WHERE id = :'img_pid';
-- reprocess after a new provider version: the processing and its job's input name version 2
SELECT id, version FROM memmie.register_provider('{"id": "vers", "name": "Vers", "version": "1",
    "trigger_events": ["blob.created"], "supported_types": ["text/x-vers"]}');
INSERT INTO n SELECT 'vers', (memmie.create_blob('00000000-0000-0000-0000-0000000000f1', 'v', 'text/x-vers')).id;
SELECT memmie.dispatch_events(100) > 0 AS dispatched;
SELECT id AS vers_pid FROM memmie.provider_processing WHERE provider_id = 'vers' \gset
SELECT count(*) > 0 AS claimed FROM memmie.claim_jobs('w1', 100, job_types => ARRAY['memmie.process']);
SELECT count(*) AS outputs FROM memmie.complete_processing(:'vers_pid', 'w1', '{}');
SELECT p.status, p.provider_version, j.status AS job_status, j.input ->> 'provider_version' AS job_provider_version
FROM memmie.provider_processing p JOIN memmie.jobs j ON j.id = p.job_id WHERE p.id = :'vers_pid';
SELECT id, version FROM memmie.register_provider('{"id": "vers", "name": "Vers", "version": "2",
    "trigger_events": ["blob.created"], "supported_types": ["text/x-vers"]}');
SELECT memmie.reprocess((SELECT id FROM n WHERE name = 'vers'), 'vers') = :'vers_pid' AS same_processing_queued_again;
SELECT p.status, p.provider_version, j.status AS job_status, j.input ->> 'provider_version' AS job_provider_version,
       j.input ->> 'provider_version' = p.provider_version AS job_runs_processing_version
FROM memmie.provider_processing p JOIN memmie.jobs j ON j.id = p.job_id WHERE p.id = :'vers_pid';
SELECT t.err(format($$SELECT memmie.reprocess(%L, NULL)$$, (SELECT id FROM n WHERE name = 'vers'))) AS null_provider;
-- a job cancelled under its worker because its blob was deleted says so in the message (MM005)
SELECT memmie.reprocess((SELECT id FROM n WHERE name = 'vers'), 'vers') = :'vers_pid' AS queued_again;
SELECT count(*) AS claimed FROM memmie.claim_jobs('w1', 100, job_types => ARRAY['memmie.process']);
SELECT memmie.delete_blob((SELECT id FROM n WHERE name = 'vers'), hard => true);
SELECT t.err(format($$SELECT memmie.complete_processing(%L, 'w1', '{}')$$, :'vers_pid')) AS complete_after_delete;
SELECT t.err(format($$SELECT memmie.heartbeat_job(%L, 'w1')$$, :'vers_pid')) AS heartbeat_after_delete;
ROLLBACK;

-- Provider options (processing_rules): content_changes_only, delete_with_parent.
BEGIN;
SELECT memmie.dispatch_events(100000) >= 0 AS earlier_events_dispatched;
SELECT id FROM memmie.register_provider('{"id": "thumb", "name": "Thumb", "version": "1",
    "trigger_events": ["blob.created", "blob.updated"], "supported_types": ["image/*"],
    "processing_rules": {"content_changes_only": true, "delete_with_parent": true}}');
SELECT id FROM memmie.register_provider('{"id": "caption", "name": "Caption", "version": "1",
    "trigger_events": ["blob.created", "blob.updated"], "supported_types": ["image/*"]}');
SELECT (memmie.create_blob('00000000-0000-0000-0000-0000000000f7', 'PNG1', 'image/png')).id AS pic \gset
SELECT memmie.dispatch_events(100) AS created_dispatched;
-- a tag-only edit: caption runs again, thumb does not; a content change: both
SELECT (memmie.apply_delta(:'pic', '[{"op": "add", "path": "/tags/-", "value": "holiday"}]')).to_version AS tag_edit;
SELECT memmie.dispatch_events(100) AS tag_edit_dispatched;
SELECT (memmie.update_content(:'pic', 'PNG2')).version AS content_edit;
SELECT memmie.dispatch_events(100) AS content_edit_dispatched;
SELECT provider_id, array_agg(processed_version ORDER BY processed_version) AS versions
FROM memmie.provider_processing WHERE blob_id = :'pic' GROUP BY 1 ORDER BY 1;
-- children: thumb's and caption's; soft-deleting the picture deletes thumb's child only (and
-- what thumb derived from that child in turn), not caption's; undelete brings back the picture only
SELECT (memmie.derive_blob(ARRAY[:'pic'::uuid], 'thumb', 'thumbnail', 'small', 'image/png')).id AS thumb \gset
SELECT (memmie.derive_blob(ARRAY[:'thumb'::uuid], 'thumb', 'thumbnail', 'smaller', 'image/png')).id AS thumb2 \gset
SELECT (memmie.derive_blob(ARRAY[:'pic'::uuid], 'caption', 'caption', 'a picture', 'text/plain')).id AS caption \gset
SELECT memmie.delete_blob(:'pic');
SELECT b.created_by, b.content_type, b.deleted_at IS NOT NULL AS deleted, b.version
FROM memmie.blobs b WHERE b.id IN (:'pic', :'thumb', :'thumb2', :'caption') ORDER BY b.depth, b.created_by;
SELECT e.event_type, count(*) FROM memmie.events e
WHERE e.aggregate_id IN (:'thumb', :'thumb2') AND e.event_type = 'blob.deleted' GROUP BY 1;
SELECT (memmie.undelete_blob(:'pic')).version AS undeleted;
SELECT count(*) FILTER (WHERE deleted_at IS NULL) AS live, count(*) AS all_rows
FROM memmie.blobs WHERE id IN (:'pic', :'thumb', :'thumb2', :'caption');
-- Errors: 22023 for an option that is not a boolean.
SELECT t.err($$SELECT memmie.register_provider('{"id": "bad", "name": "Bad", "version": "1", "processing_rules": {"content_changes_only": "yes"}}')$$) AS not_boolean;
SELECT t.err($$SELECT memmie.register_provider('{"id": "bad", "name": "Bad", "version": "1", "processing_rules": {"delete_with_parent": 1}}')$$) AS not_boolean_either;
ROLLBACK;
