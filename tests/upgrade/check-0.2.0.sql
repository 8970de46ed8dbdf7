-- After 0.2.0 -> current: the application role goes on with the old data.
SET ROLE memmie_upgrade_app;
SELECT 'the app role creates a blob', (memmie.create_blob('00000000-0000-0000-0000-00000000aa01', 'after', 'text/plain')).version;
SELECT 'and changes an old one', (memmie.apply_delta((SELECT id FROM public.ids WHERE name = 'json'), '[{"op": "replace", "path": "/content/n", "value": 3}]')).to_version;
SELECT 'old blobs found', count(*) FROM memmie.find_blobs('00000000-0000-0000-0000-00000000aa01');
SELECT 'old edges traversed', count(*) FROM memmie.descendants((SELECT id FROM public.ids WHERE name = 'doc'));
SELECT 'dispatched', memmie.dispatch_events(1000) > 0;
SELECT 'claimed and completed, children', count(*) FROM (
    SELECT memmie.complete_processing(j.id::uuid, 'w', '{"children": [{"content": "z", "content_type": "text/plain"}]}')
    FROM memmie.claim_jobs('w', 10) j) x;
SELECT 'kept states the upgrade built', array_agg(version ORDER BY version) FROM memmie.blob_snapshots
WHERE blob_id = (SELECT id FROM public.ids WHERE name = 'long');
SELECT 'a middle version replayed from one', memmie.blob_state((SELECT id FROM public.ids WHERE name = 'long'), 20) -> 'content';
SELECT 'the app role squashes the old history', memmie.squash_history((SELECT id FROM public.ids WHERE name = 'long'), 30);
SELECT 'the head replayed from the new base', memmie.blob_state((SELECT id FROM public.ids WHERE name = 'long')) -> 'content';
RESET ROLE;
SELECT check_name, ok FROM memmie.check() WHERE NOT ok;
SELECT 'unknown quota key moved', quota_limits, settings FROM memmie.user_contexts
WHERE user_id = '00000000-0000-0000-0000-00000000aa01';
SELECT 'set_quota on the upgraded data', quota_limits FROM memmie.set_quota('00000000-0000-0000-0000-00000000aa01', '{"max_blobs": 1000}');
