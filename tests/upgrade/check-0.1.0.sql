-- After 0.1.0 -> current: the partitions 0.1.0 made at install are indexed like new ones and no
-- longer extension members; the functions 0.2.0 added work on the old data, for the
-- application role.
CREATE TEMP VIEW parts AS
SELECT c.oid, c.relname, p.relname AS parent,
       (SELECT count(*) FROM pg_index x WHERE x.indrelid = c.oid) AS indexes,
       EXISTS (SELECT FROM pg_index x WHERE x.indrelid = c.oid AND x.indisprimary) AS has_pkey
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
WHERE p.oid IN ('memmie.deltas'::regclass, 'memmie.events'::regclass) AND c.relname ~ '_[0-9]';
SELECT 'dated partitions', count(*) FROM parts;
SELECT 'without a primary key', count(*) FROM parts WHERE NOT has_pkey;
SELECT 'with fewer indexes than a new one', count(*) FROM parts
WHERE indexes < CASE parent WHEN 'deltas' THEN 9 ELSE 7 END;
SELECT 'still extension members', count(*) FROM parts p
WHERE EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = p.oid AND d.deptype = 'e');
SELECT 'events before the upgrade are in the feed', count(*) = (SELECT count(*) FROM memmie.events) FROM memmie.events_since(0, 1000);
SELECT id FROM memmie.register_provider('{"id": "p", "name": "P", "version": "1", "trigger_events": ["blob.created"], "supported_types": ["text/plain"]}') \g /dev/null
-- of the old blob.created events only 'child' matches: doc and json moved on or do not match, gone is deleted
SELECT memmie.dispatch_events(1000) \g /dev/null
SELECT 'old blob.created events dispatched', count(*) = 1 FROM memmie.provider_processing;
SET ROLE memmie_upgrade_app;
SELECT 'derive_blob from an old blob', (memmie.derive_blob(ARRAY[(SELECT id FROM public.ids WHERE name = 'doc')], 'p', 't', 'x', 'text/plain')).version;
SELECT 'old parent edge traversed', (SELECT id FROM public.ids WHERE name = 'child') IN (SELECT blob_id FROM memmie.descendants((SELECT id FROM public.ids WHERE name = 'doc')));
SELECT 'claimed', count(*) FROM memmie.claim_jobs('w', 10);
SELECT 'completed', count(*) FROM (SELECT memmie.complete_processing(p.id, 'w', '{"children": [{"content": "y", "content_type": "text/plain"}]}')
                                   FROM memmie.provider_processing p WHERE p.status = 'processing') x;
SELECT 'the app role creates a blob', (memmie.create_blob('00000000-0000-0000-0000-00000000aa01', 'after', 'text/plain')).version;
RESET ROLE;
SELECT check_name, ok FROM memmie.check() WHERE NOT ok;
