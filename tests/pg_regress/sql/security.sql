-- Code planted by other roles never runs inside memmie with other rights (issue 12, findings 1
-- and 2).
--
-- A role that may create in schema public plants a kit of objects that shadow the pg_catalog
-- ones memmie's code uses (operators, functions, aggregates), each saying so with a WARNING
-- when it runs as anyone but its planter; an application role plants pg_temp objects that do
-- the same. Then every API function runs as a superuser and as the application role with
-- search_path = public, memmie. No WARNING may appear below, and nobody becomes superuser.
-- (The test's own queries run with search_path = pg_catalog, pg_temp: the kit is not in their way.)
CREATE ROLE memmie_sec_app;
CREATE ROLE memmie_sec_mallory;
-- all three levels, so that one role runs every function (each level alone: access.sql)
SELECT memmie.grant_app('memmie_sec_app'), memmie.grant_worker('memmie_sec_app'),
       memmie.grant_admin('memmie_sec_app');
GRANT USAGE, CREATE ON SCHEMA public TO memmie_sec_mallory;

SET ROLE memmie_sec_mallory;
CREATE FUNCTION public.shadow_hit(what text) RETURNS void LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF current_user OPERATOR(pg_catalog.<>) 'memmie_sec_mallory' THEN
        RAISE WARNING 'shadow % ran as % (superuser: %)', what, current_user,
            (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) current_user);
    END IF;
END $$;
CREATE FUNCTION public.s_eq_vt(a varchar, b text) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN PERFORM public.shadow_hit('=(varchar,text)'); RETURN a::pg_catalog.text OPERATOR(pg_catalog.=) b; END $$;
CREATE OPERATOR public.= (LEFTARG = varchar, RIGHTARG = text, FUNCTION = public.s_eq_vt);
CREATE FUNCTION public.s_ne_vv(a varchar, b varchar) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN PERFORM public.shadow_hit('<>(varchar,varchar)'); RETURN a::pg_catalog.text OPERATOR(pg_catalog.<>) b::pg_catalog.text; END $$;
CREATE OPERATOR public.<> (LEFTARG = varchar, RIGHTARG = varchar, FUNCTION = public.s_ne_vv);
CREATE FUNCTION public.s_ne_vt(a varchar, b text) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN PERFORM public.shadow_hit('<>(varchar,text)'); RETURN a::pg_catalog.text OPERATOR(pg_catalog.<>) b; END $$;
CREATE OPERATOR public.<> (LEFTARG = varchar, RIGHTARG = text, FUNCTION = public.s_ne_vt);
CREATE FUNCTION public.s_arrow(a jsonb, b jsonb) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN PERFORM public.shadow_hit('->>(jsonb,jsonb)'); RETURN a OPERATOR(pg_catalog.->>) (b OPERATOR(pg_catalog.#>>) '{}'); END $$;
CREATE OPERATOR public.->> (LEFTARG = jsonb, RIGHTARG = jsonb, FUNCTION = public.s_arrow);
CREATE FUNCTION public.s_cat_vt(a varchar, b text) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN PERFORM public.shadow_hit('||(varchar,text)'); RETURN a::pg_catalog.text OPERATOR(pg_catalog.||) b; END $$;
CREATE OPERATOR public.|| (LEFTARG = varchar, RIGHTARG = text, FUNCTION = public.s_cat_vt);
CREATE FUNCTION public.format(f text, a text) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN PERFORM public.shadow_hit('format(text,text)'); RETURN pg_catalog.format(f, a); END $$;
CREATE FUNCTION public.format(f text, a uuid) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN PERFORM public.shadow_hit('format(text,uuid)'); RETURN pg_catalog.format(f, a); END $$;
CREATE FUNCTION public.to_jsonb(a text) RETURNS jsonb LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN PERFORM public.shadow_hit('to_jsonb(text)'); RETURN pg_catalog.to_jsonb(a); END $$;
CREATE FUNCTION public.to_jsonb(a uuid) RETURNS jsonb LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN PERFORM public.shadow_hit('to_jsonb(uuid)'); RETURN pg_catalog.to_jsonb(a); END $$;
CREATE FUNCTION public.jsonb_build_object(a text, b text) RETURNS jsonb LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN PERFORM public.shadow_hit('jsonb_build_object(text,text)'); RETURN pg_catalog.jsonb_build_object(a, b); END $$;
CREATE FUNCTION public.jsonb_build_object(a text, b uuid) RETURNS jsonb LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN PERFORM public.shadow_hit('jsonb_build_object(text,uuid)'); RETURN pg_catalog.jsonb_build_object(a, b); END $$;
CREATE FUNCTION public.cardinality(a text[]) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN PERFORM public.shadow_hit('cardinality(text[])'); RETURN pg_catalog.cardinality(a); END $$;
CREATE FUNCTION public.array_position(a text[], b text) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN PERFORM public.shadow_hit('array_position(text[],text)'); RETURN pg_catalog.array_position(a, b); END $$;
CREATE FUNCTION public.unnest(a text[]) RETURNS SETOF text LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN PERFORM public.shadow_hit('unnest(text[])'); RETURN QUERY SELECT pg_catalog.unnest(a); END $$;
CREATE FUNCTION public.unnest(a uuid[]) RETURNS SETOF uuid LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN PERFORM public.shadow_hit('unnest(uuid[])'); RETURN QUERY SELECT pg_catalog.unnest(a); END $$;
CREATE FUNCTION public.length(a varchar) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN PERFORM public.shadow_hit('length(varchar)'); RETURN pg_catalog.length(a::pg_catalog.text); END $$;
CREATE FUNCTION public.lower(a varchar) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN PERFORM public.shadow_hit('lower(varchar)'); RETURN pg_catalog.lower(a::pg_catalog.text); END $$;
CREATE FUNCTION public.nextval(a text) RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN PERFORM public.shadow_hit('nextval(text)'); RETURN pg_catalog.nextval(a::pg_catalog.regclass); END $$;
CREATE FUNCTION public.hashtextextended(a varchar, b int) RETURNS bigint LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN PERFORM public.shadow_hit('hashtextextended(varchar,int)'); RETURN pg_catalog.hashtextextended(a, b); END $$;
CREATE FUNCTION public.s_agg_uuid(s uuid[], v uuid) RETURNS uuid[] LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN PERFORM public.shadow_hit('array_agg(uuid)'); RETURN s OPERATOR(pg_catalog.||) v; END $$;
CREATE AGGREGATE public.array_agg(uuid) (SFUNC = public.s_agg_uuid, STYPE = uuid[]);
CREATE FUNCTION public.s_agg_text(s text[], v text) RETURNS text[] LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN PERFORM public.shadow_hit('array_agg(text)'); RETURN s OPERATOR(pg_catalog.||) v; END $$;
CREATE AGGREGATE public.array_agg(text) (SFUNC = public.s_agg_text, STYPE = text[]);
RESET ROLE;

-- Finding 1: the pg_temp domain of the report, planted by the application role, which then
-- commits enough new contents (17) for the counts to be written by the batched statement.
SET ROLE memmie_sec_app;
SET memmie.user_id = '5ec00000-0000-0000-0000-000000000001';
CREATE FUNCTION pg_temp.evil(x pg_catalog.text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    IF current_user OPERATOR(pg_catalog.<>) 'memmie_sec_app' THEN
        RAISE WARNING 'pg_temp.evil ran as % (superuser: %)', current_user,
            (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) current_user);
    END IF;
    RETURN true;
END $$;
CREATE DOMAIN pg_temp.text AS pg_catalog.text CHECK (pg_temp.evil(VALUE));
CREATE DOMAIN pg_temp.int8 AS pg_catalog.int8 CHECK (pg_temp.evil(VALUE::pg_catalog.text));
BEGIN;
SELECT count(memmie.create_blob('5ec00000-0000-0000-0000-000000000001', convert_to('sec c' || i, 'UTF8'), 'text/plain'))
FROM generate_series(1, 17) i;
COMMIT;
-- and the few-contents path (one UPDATE per content)
SELECT (memmie.create_blob('5ec00000-0000-0000-0000-000000000001', 'sec one', 'text/plain')).version;
RESET memmie.user_id;
RESET ROLE;
SET search_path = pg_catalog, pg_temp;
SELECT rolname, rolsuper FROM pg_roles WHERE rolname LIKE 'memmie_sec_%' ORDER BY 1;
SELECT count(*) AS counted FROM memmie.content_storage
WHERE content_hash IN (SELECT content_hash FROM memmie.blob_versions WHERE user_id = '5ec00000-0000-0000-0000-000000000001')
  AND reference_count = 1;

-- Finding 2: every API function with public first on the search_path: as a superuser ...
CREATE TABLE t.sec_ids (name text PRIMARY KEY, id uuid);
GRANT ALL ON t.sec_ids TO memmie_sec_app;
GRANT USAGE ON SCHEMA t TO memmie_sec_app;
CREATE FUNCTION t.sec_tour(u uuid, tag text) RETURNS text
LANGUAGE plpgsql SET search_path = public, memmie, pg_temp AS $$
DECLARE
    d uuid; j uuid; c uuid; h text; job record; n int;
BEGIN
    d := (create_blob(u, convert_to('{"title": "T", "n": 1}', 'UTF8'), 'application/json',
                      metadata => '{"title": "Sec doc"}', tags => ARRAY['sec', tag])).id;
    PERFORM apply_delta(d, '[{"op": "replace", "path": "/content/n", "value": 2}]', expected_version => 1);
    PERFORM apply_delta(d, '[{"op": "add", "path": "/metadata/description", "value": "x"}]');
    PERFORM update_content(d, convert_to('{"n": 3}', 'UTF8'));
    PERFORM revert_blob(d, 1);
    PERFORM blob_state(d, 2), blob_content(d, 3), blob_history(d);
    PERFORM count(*) FROM find_blobs(u, tags => ARRAY['sec'], text_query => 'sec doc');
    PERFORM count(*) FROM find_blobs(u, created_by => 'user', include_deleted => true);
    c := (derive_blob(ARRAY[d], 'sec-summarizer', 'summary', convert_to('short', 'UTF8'), 'text/plain')).id;
    j := (create_blob(u, 'other', 'text/plain')).id;
    PERFORM add_edge(j, c, 'sec-summarizer', 'link');
    PERFORM count(*) FROM descendants(d);
    PERFORM count(*) FROM ancestors(c);
    PERFORM lineage(d), dag_stats(d);
    PERFORM events_since(0, 10);
    PERFORM dispatch_events(1000);
    FOR job IN SELECT * FROM claim_jobs('sec-worker-' || tag, 10, '1 minute') LOOP
        PERFORM heartbeat_job(job.id, 'sec-worker-' || tag, 50);
        PERFORM complete_processing(job.id::uuid, 'sec-worker-' || tag,
            '{"children": [{"content": "s", "content_type": "text/plain", "transform_type": "summary"}]}');
    END LOOP;
    PERFORM reprocess(d, 'sec-summarizer');
    PERFORM dispatch_events(1000);
    FOR job IN SELECT * FROM claim_jobs('sec-worker-' || tag, 10, '1 minute') LOOP
        PERFORM fail_processing(job.id::uuid, 'sec-worker-' || tag, 'timeout: sec', false);
    END LOOP;
    PERFORM enqueue_job('sec.other', u, '{"x": 1}');
    FOR job IN SELECT * FROM claim_jobs('sec-worker-' || tag, 10, '1 minute', job_types => ARRAY['sec.other']) LOOP
        PERFORM fail_job(job.id, 'sec-worker-' || tag, 'no', true);
        PERFORM cancel_job(job.id);
    END LOOP;
    h := put_content(convert_to('sec put ' || tag, 'UTF8'), 'text/plain');
    PERFORM verify_content(h);
    PERFORM get_content(memmie.sha256('other'));
    FOR job IN SELECT * FROM claim_jobs('sec-worker-' || tag, 10, '1 minute') LOOP
        PERFORM processing_input(job.id::uuid, 'sec-worker-' || tag);
    END LOOP;
    PERFORM create_external_blob(u, repeat('e', 63) || left(tag, 1), 10, 'text/plain', 's3', 'bucket/sec-' || tag);
    PERFORM record_api_call(u, true, 5);
    PERFORM count(*) FROM user_usage(u);
    PERFORM jsonb_patch('{"a": 1}', '[{"op": "add", "path": "/b", "value": 2}]'), jsonb_diff('{"a": 1}', '{"a": 2}'),
            sha256('x');
    PERFORM delete_blob(j);
    PERFORM undelete_blob(j, expected_version => 2);
    PERFORM delete_blob(j, expected_version => 3);
    PERFORM delete_blob(j, hard => true);
    -- the functions of the access levels, long histories and quotas (0.3.0)
    PERFORM current_user_id(), count(*) FROM access_levels();
    PERFORM * FROM pending_work('memmie.process');
    PERFORM apply_delta(d, '[{"op": "replace", "path": "/content/n", "value": 4}]');
    PERFORM squash_history(d, 3);
    PERFORM set_quota(u, '{"max_blobs": 1000, "keep_versions": 50}');
    BEGIN
        PERFORM distribute();   -- 55000 here (no Citus), after its checks ran
    EXCEPTION WHEN object_not_in_prerequisite_state THEN NULL;
    END;
    RETURN 'ok';
END $$;
SET search_path = public, memmie;
SELECT id FROM memmie.register_provider('{"id": "sec-summarizer", "name": "S", "version": "1",
    "trigger_events": ["blob.created", "blob.updated"], "supported_types": ["application/json", "text/*"]}');
SELECT (memmie.set_provider_status('sec-summarizer', 'active')).status;
SELECT t.sec_tour('5ec00000-0000-0000-0000-000000000002', 'a');
-- the owner's own: granting and revoking the levels
SELECT memmie.grant_app('memmie_sec_mallory'), memmie.grant_worker('memmie_sec_mallory'),
       memmie.grant_admin('memmie_sec_mallory'), memmie.revoke_access('memmie_sec_mallory');
SELECT memmie.backfill('sec-summarizer') >= 0 AS backfilled;
-- operations (the background worker runs maintenance() as a superuser)
SELECT memmie.ensure_partitions() >= 0 AS ensured;
SELECT memmie.create_partitions('memmie.events', '2031-01-01', 2);
SELECT memmie.create_partitions('memmie.deltas', '2031-01-01', 1);
SELECT memmie.drop_old_partitions('memmie.events', '1 day') >= 0 AS dropped;
SELECT memmie.maintenance() IS NOT NULL AS maintained;
SELECT memmie.refresh_views() IS NOT NULL AS refreshed, memmie.fold_usage() >= 0 AS folded,
       memmie.rollup_metrics() >= 0 AS rolled;
SELECT count(*) >= 0 AS collected FROM memmie.gc_content('0 seconds');
SELECT count(*) AS not_ok FROM memmie.check() WHERE NOT ok;
-- ... and as the application role
SET ROLE memmie_sec_app;
SET memmie.user_id = '5ec00000-0000-0000-0000-000000000003';
SELECT t.sec_tour('5ec00000-0000-0000-0000-000000000003', 'b');
RESET memmie.user_id;
RESET ROLE;
SET search_path = pg_catalog, pg_temp;
SELECT rolname, rolsuper FROM pg_roles WHERE rolname LIKE 'memmie_sec_%' ORDER BY 1;

-- No index or constraint memmie made uses an operator or function from outside pg_catalog and
-- memmie (an IMMUTABLE operator planted in public would run on every insert).
SELECT count(*) AS foreign_dependencies
FROM pg_depend d
JOIN pg_class c ON d.classid = 'pg_class'::regclass AND c.oid = d.objid
LEFT JOIN pg_operator o ON d.refclassid = 'pg_operator'::regclass AND o.oid = d.refobjid
LEFT JOIN pg_proc p ON d.refclassid = 'pg_proc'::regclass AND p.oid = d.refobjid
WHERE c.relnamespace = 'memmie'::regnamespace
  AND coalesce(o.oprnamespace, p.pronamespace) NOT IN ('pg_catalog'::regnamespace, 'memmie'::regnamespace);

-- Every memmie function that runs SQL pins its search_path; the rest are listed (they run no
-- SQL, or are SQL functions kept inlinable, qualified instead).
SELECT p.proname, l.lanname
FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
WHERE p.pronamespace = 'memmie'::regnamespace
  AND NOT coalesce(p.proconfig @> '{"search_path=pg_catalog, pg_temp"}', false)
  AND l.lanname IN ('sql', 'plpgsql')
ORDER BY 1;

DROP FUNCTION t.sec_tour(uuid, text);
DROP TABLE t.sec_ids;
DROP OWNED BY memmie_sec_mallory CASCADE;
DROP OWNED BY memmie_sec_app CASCADE;
DROP ROLE memmie_sec_mallory;
DROP ROLE memmie_sec_app;
RESET search_path;
