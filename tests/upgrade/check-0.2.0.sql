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
-- Roles made on 0.2.0, given levels after the update (CHANGELOG "Upgrading to 0.3.0"): the app
-- role narrowed to the app level and bound to a user, a worker, an admin.
SELECT 'levels given', count(*) FROM (SELECT memmie.revoke_access('memmie_upgrade_app'), memmie.grant_app('memmie_upgrade_app'),
    memmie.grant_worker('memmie_upgrade_worker'), memmie.grant_admin('memmie_upgrade_admin')) x;
SELECT 'the app role may write no table', has_table_privilege('memmie_upgrade_app', 'memmie.blobs', 'INSERT,UPDATE,DELETE');
SET ROLE memmie_upgrade_app;
SET memmie.user_id = '00000000-0000-0000-0000-00000000aa01';
SELECT 'bound, the app role creates a blob', (memmie.create_blob('00000000-0000-0000-0000-00000000aa01', 'bound', 'text/plain')).version;
SELECT 'and sees its user''s old blobs only', count(*), count(*) FILTER (WHERE user_id <> memmie.current_user_id()) FROM memmie.blobs;
RESET memmie.user_id;
SET ROLE memmie_upgrade_worker;
SELECT 'the worker dispatches', memmie.dispatch_events(1000) >= 0;
CREATE TEMP TABLE held AS SELECT * FROM memmie.claim_jobs('w2', 10);
SELECT 'claims and reads its input', count(*) > 0, count(*) = count(p.content) FROM held j, LATERAL memmie.processing_input(j.id::uuid, 'w2') p;
SET ROLE memmie_upgrade_admin;
SELECT 'the admin checks', count(*) FILTER (WHERE NOT ok) FROM memmie.check();
SELECT 'and runs maintenance', memmie.maintenance() ? 'versions_squashed';
RESET ROLE;
