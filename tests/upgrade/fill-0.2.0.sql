-- Data written through the 0.2.0 API: the 0.1.0 kinds of writes by the application role, then a
-- provider, dispatch, a claimed and completed job with a derived child, an edge, partitions.
\ir fill-0.1.0.sql
SELECT memmie.ensure_partitions();
SELECT memmie.register_provider('{"id": "p", "name": "P", "version": "1", "trigger_events": ["blob.created"], "supported_types": ["text/plain"]}');
SET ROLE memmie_upgrade_app;
INSERT INTO public.ids SELECT 'note', (memmie.create_blob('00000000-0000-0000-0000-00000000aa01', 'a note', 'text/plain')).id;
SELECT memmie.dispatch_events(1000);
SELECT memmie.complete_processing(j.id::uuid, 'w', '{"children": [{"content": "summary", "content_type": "text/plain", "transform_type": "summary"}]}')
FROM memmie.claim_jobs('w', 10) j;
INSERT INTO public.ids SELECT 'derived', (memmie.derive_blob(ARRAY[(SELECT id FROM public.ids WHERE name = 'doc')], 'p', 't', 'x', 'text/plain')).id;
SELECT memmie.add_edge((SELECT id FROM public.ids WHERE name = 'json'), (SELECT id FROM public.ids WHERE name = 'derived'), 'p', 'link');
-- a long history (40 versions): the upgrade gives it kept states
INSERT INTO public.ids SELECT 'long', (memmie.create_blob('00000000-0000-0000-0000-00000000aa01', convert_to('{"n": 1}', 'UTF8'), 'application/json')).id;
SELECT count(memmie.apply_delta((SELECT id FROM public.ids WHERE name = 'long'), format('[{"op": "replace", "path": "/content/n", "value": %s}]', i)::jsonb))
FROM generate_series(2, 40) i;
RESET ROLE;
-- a quota key 0.2.0 took but never enforced (0.3.0's constraint refuses it; the upgrade moves it
-- to settings.unknown_quota_limits)
UPDATE memmie.user_contexts SET quota_limits = '{"max_blob": 5, "max_blobs": 100}'
WHERE user_id = '00000000-0000-0000-0000-00000000aa01';
-- 0.2.0's schema with this library loaded (before ALTER EXTENSION UPDATE): quotas still hold
-- inside the writing statement (the storage change is written at once there)
INSERT INTO memmie.user_contexts (user_id, quota_limits)
VALUES ('00000000-0000-0000-0000-00000000aa0f', '{"max_storage_bytes": 50}');
DO $$
BEGIN
    BEGIN
        PERFORM memmie.create_blob('00000000-0000-0000-0000-00000000aa0f', convert_to(repeat('q', 100), 'UTF8'), 'text/plain');
        RAISE EXCEPTION 'max_storage_bytes not enforced on the 0.2.0 schema';
    EXCEPTION WHEN SQLSTATE 'MM002' THEN
        NULL;
    END;
END
$$;
