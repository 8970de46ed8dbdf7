-- memmie 0.2.0 -> 0.3.0, written by hand: each step names the change it carries (CHANGELOG.md).
-- tests/upgrade checks the result against a fresh install, object by object and grant by grant.
\echo Use "ALTER EXTENSION memmie UPDATE" to load this file. \quit

-- ---------------------------------------------------------------------------------------------
-- Security: every function that runs SQL pins its search_path (sql/*.sql, src/*.rs).
ALTER FUNCTION memmie."check"() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie._add_counts(jsonb,jsonb) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie._apply_patch(memmie.blobs,jsonb,text,uuid,jsonb,uuid) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie._cancel_orphan_jobs() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie._check_content_quota(uuid,bigint) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie._check_delta_exists(uuid) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie._check_expected(memmie.blobs,integer) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie._check_live(memmie.blobs) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie._check_mime_pattern(text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie._check_provider(text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie._check_quotas(uuid) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie._check_row(text,bigint,text,text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie._check_text(text,text,integer) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie._child_bytes(jsonb,integer) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie._complete_job(text,text,jsonb,boolean) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie._count_blobs() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie._create_partitions(oid,date,integer) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie._def_field(jsonb,text,text,boolean) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie._derive(uuid[],text,text,bytea,text,jsonb,text[],uuid,jsonb) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie._drop_old_partitions(oid,interval) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie._error_type(text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie._external_location(text,bigint,text,text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie._find_blobs_sql(boolean,boolean,boolean,boolean,boolean,boolean,boolean) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie._head_delta(memmie.blobs) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie._head_state(memmie.blobs) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie._index_partition(text,text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie._live_parent(uuid,uuid) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie._lock_blob(uuid) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie._lock_job(text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie._lock_user(uuid) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie._lock_user_dag(uuid) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie._make_state(text,bigint,text,jsonb,text[],boolean) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie._operation(text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie._queue_processing(uuid[],text[],jsonb[]) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie._record_version(memmie.blobs,text,jsonb,text,uuid,jsonb,text,uuid) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie._require(anyelement,text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie._require_provider(text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie._sequence_events(integer) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie._stored_here(text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie._sync_processing() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie._verify_content_row(text,text,text,text,bytea,bigint) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie._verify_target(text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie._with_content(jsonb,uuid,bytea,text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie._would_cycle(uuid,uuid) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie._write_state(memmie.blobs,jsonb,text,jsonb,text,uuid,jsonb,uuid) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie._zero_counters() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie.add_edge(uuid,uuid,text,text,jsonb) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie.ancestors(uuid,integer) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie.apply_delta(uuid,jsonb,integer,text,uuid,jsonb) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie.backfill(text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie.blob_content(uuid,integer) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie.blob_history(uuid) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie.blob_state(uuid,integer) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie.cancel_job(text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie.claim_jobs(text,integer,interval,text[]) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie.complete_job(text,text,jsonb) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie.complete_processing(uuid,text,jsonb) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie.create_blob(uuid,bytea,text,jsonb,text[],uuid,text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie.create_external_blob(uuid,text,bigint,text,text,text,jsonb,text[]) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie.create_partitions(regclass,date,integer) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie.dag_stats(uuid) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie.delete_blob(uuid,boolean) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie.derive_blob(uuid[],text,text,bytea,text,jsonb,text[],uuid) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie.descendants(uuid,integer) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie.dispatch_events(integer) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie.drop_old_partitions(regclass,interval) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie.enqueue_job(text,uuid,jsonb,integer,timestamp with time zone,text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie.ensure_partitions(integer) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie.events_since(bigint,integer) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie.fail_job(text,text,text,boolean) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie.fail_processing(uuid,text,text,boolean) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie.find_blobs(uuid,text[],text,uuid,jsonb,text,boolean,uuid,integer) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie.fold_usage() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie.gc_content(interval) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie.get_content(text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie.heartbeat_job(text,text,integer) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie.lineage(uuid) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie.put_content(bytea,text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie.record_api_call(uuid,boolean,integer) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie.refresh_user_blob_summary() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie.refresh_views() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie.register_provider(jsonb) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie.reprocess(uuid,text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie.revert_blob(uuid,integer,text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie.rollup_metrics(date) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie.schedule_maintenance(text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie.set_provider_status(text,text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie.unschedule_maintenance() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie.update_content(uuid,bytea,text,integer,text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie.update_external_content(uuid,text,bigint,text,text,text,integer,text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie.update_updated_at() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie.user_usage(uuid,date,date) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION memmie.verify_content(text) SET search_path = pg_catalog, pg_temp;

-- The SQL functions kept inlinable name every operator, function and type with its schema.
CREATE OR REPLACE FUNCTION memmie.jsonb_diff(source jsonb, target jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT memmie._jsonb_diff(source::pg_catalog.text, target::pg_catalog.text)::pg_catalog.jsonb $$;

CREATE OR REPLACE FUNCTION memmie._utc_day(t timestamptz) RETURNS date
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT (t AT TIME ZONE 'UTC')::pg_catalog.date $$;

CREATE OR REPLACE FUNCTION memmie._utc_start(d date) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT d::pg_catalog.timestamp AT TIME ZONE 'UTC' $$;

CREATE OR REPLACE FUNCTION memmie._provider_accepts(p memmie.providers, p_type text, p_size bigint)
RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT (p.max_input_size IS NULL OR p_size OPERATOR(pg_catalog.<=) p.max_input_size)
       AND (pg_catalog.cardinality(p.supported_types) OPERATOR(pg_catalog.=) 0
            OR EXISTS (SELECT FROM pg_catalog.unnest(p.supported_types) pat
                       WHERE pat OPERATOR(pg_catalog.=) '*/*'
                          OR pg_catalog.lower(pat) OPERATOR(pg_catalog.=) pg_catalog.lower(pg_catalog.split_part(p_type, ';', 1))
                          OR (pat OPERATOR(pg_catalog.~~) '%/*'
                              AND pg_catalog.lower(pg_catalog.left(pat, -1)) OPERATOR(pg_catalog.=)
                                  (pg_catalog.lower(pg_catalog.split_part(p_type, '/', 1)) OPERATOR(pg_catalog.||) '/'))))
$$;

CREATE OR REPLACE FUNCTION memmie._matches(p memmie.providers, b memmie.blobs, v memmie.blob_versions)
RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT p.status OPERATOR(pg_catalog.=) 'active'
       AND b.deleted_at IS NULL AND NOT v.deleted AND v.version OPERATOR(pg_catalog.=) b.version
       AND b.created_by OPERATOR(pg_catalog.<>) p.id AND v.created_by OPERATOR(pg_catalog.<>) p.id
       AND b.depth OPERATOR(pg_catalog.<) memmie._max_derivation_depth()
       AND memmie._provider_accepts(p, v.content_type, v.content_size)
$$;

-- storage_path: no control characters, no "." / ".." segments.
CREATE OR REPLACE FUNCTION memmie._with_external(s jsonb, p_user uuid, p_location jsonb, p_type text)
RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    h       text := p_location ->> 'content_hash';
    size    bigint := (p_location ->> 'content_size')::bigint;
    backend text := p_location ->> 'storage_backend';
    path    text := p_location ->> 'storage_path';
    c       memmie.content_storage;
BEGIN
    PERFORM memmie._require(h, 'content_hash');
    PERFORM memmie._check_hash(h);
    PERFORM memmie._require(size, 'content_size');
    IF size < 0 THEN
        RAISE EXCEPTION 'content_size must not be negative, got %', size USING ERRCODE = '22023';
    END IF;
    PERFORM memmie._require(backend, 'storage_backend');
    IF backend NOT IN ('s3', 'filesystem') THEN
        RAISE EXCEPTION 'storage_backend must be "s3" or "filesystem", got "%" (content kept in PostgreSQL is stored with create_blob / update_content)',
            backend USING ERRCODE = '22023';
    END IF;
    PERFORM memmie._check_text(path, 'storage_path', 4096);
    -- gc_content returns storage_path for the caller to delete: no control characters, no "."
    -- or ".." segment that could make it name something outside the store's own root.
    IF path ~ '[[:cntrl:]]' OR path ~ '(^|/)\.\.?(/|$)' THEN
        RAISE EXCEPTION 'storage_path must not contain control characters or "." / ".." segments, got %',
            quote_literal(regexp_replace(path, '[[:cntrl:]]', '?', 'g'))
            USING ERRCODE = '22023';
    END IF;
    PERFORM memmie._check_content_quota(p_user, size);
    INSERT INTO memmie.content_storage (content_hash, content, storage_backend, storage_path,
                                        compression, original_size, compressed_size, mime_type)
    VALUES (h, NULL, backend, path, 'none', size, NULL, p_type)
    ON CONFLICT (content_hash) DO NOTHING;
    -- locked until the caller commits, so gc_content cannot delete it under the new reference
    SELECT * INTO c FROM memmie.content_storage x WHERE x.content_hash = h FOR KEY SHARE;
    IF c.storage_backend IS DISTINCT FROM backend OR c.storage_path IS DISTINCT FROM path
       OR c.original_size <> size THEN
        -- says nothing of where the existing content is kept
        RAISE EXCEPTION 'content % is already recorded with another storage_backend, storage_path or content_size', h
            USING ERRCODE = '22023',
                  HINT = 'A blob can reference existing content only by naming the same location and size.';
    END IF;
    RETURN (s - 'content') || jsonb_build_object('content_hash', h, 'content_size', size,
                                                 'content_type', p_type);
END
$$;

-- maintenance() analyzes blob_edges too.
CREATE OR REPLACE FUNCTION memmie.maintenance() RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    report    jsonb := '{}';
    t0        timestamptz := clock_timestamp();
    n         int;
    retention interval := make_interval(secs => memmie._event_retention_seconds());
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtextextended('memmie.maintenance', 0)) THEN
        RETURN jsonb_build_object('skipped', 'another session is running memmie.maintenance()');
    END IF;
    report := report || jsonb_build_object('partitions_created', memmie.ensure_partitions());
    ANALYZE memmie.blobs;
    ANALYZE memmie.blob_edges;
    ANALYZE memmie.blob_versions;
    ANALYZE memmie.deltas;
    ANALYZE memmie.events;
    ANALYZE memmie.provider_processing;
    ANALYZE memmie.jobs;
    report := report || jsonb_build_object('analyzed',
        '["blobs", "blob_versions", "deltas", "events", "provider_processing", "jobs"]'::jsonb);
    report := report || jsonb_build_object('views', memmie.refresh_views());
    -- jobs past expires_at are never handed out; a running one is left to its worker
    DELETE FROM memmie.jobs j WHERE j.expires_at < clock_timestamp() AND j.status <> 'running';
    GET DIAGNOSTICS n = ROW_COUNT;
    report := report || jsonb_build_object('expired_jobs_removed', n);
    report := report || jsonb_build_object('event_partitions_dropped',
        memmie.drop_old_partitions('memmie.events', retention), 'event_retention', justify_hours(retention)::text);
    SELECT count(*) INTO n FROM memmie.gc_content();
    report := report || jsonb_build_object('contents_collected', n);
    report := report || jsonb_build_object('usage_increments_folded', memmie.fold_usage());
    -- today's provider metrics so far, and yesterday's final ones (UTC days)
    report := report || jsonb_build_object('provider_metrics_rows',
        memmie.rollup_metrics(memmie._utc_day(now()) - 1) + memmie.rollup_metrics(memmie._utc_day(now())));
    RETURN report || jsonb_build_object('ms', round(extract(epoch FROM clock_timestamp() - t0) * 1000, 1));
END
$$;

-- ---------------------------------------------------------------------------------------------
-- Blob states nest at most 128 levels (the patch engine's limit): create_blob and
-- update_content check the metadata and JSON content they take through SQL.
CREATE FUNCTION memmie."_check_depth"(
	"doc" jsonb,
	"what" TEXT
) RETURNS bool
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'check_depth_wrapper';
REVOKE ALL ON FUNCTION memmie._check_depth(jsonb, text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION memmie._insert_blob(p_user uuid, p_content bytea, p_type text, p_meta jsonb,
                                    p_tags text[], parent memmie.blobs, p_by text,
                                    p_operation text, p_transform text,
                                    p_caused_by uuid DEFAULT NULL, p_caused_event jsonb DEFAULT NULL,
                                    p_external jsonb DEFAULT NULL)
RETURNS memmie.blobs
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s jsonb;
    b memmie.blobs;
BEGIN
    IF p_external IS NULL THEN
        PERFORM memmie._require(p_content, 'content');
    END IF;
    PERFORM memmie._require(p_type, 'content_type');
    PERFORM memmie._check_mime(p_type);
    PERFORM memmie._require(p_meta, 'metadata');
    PERFORM memmie._require(p_tags, 'tags');
    IF jsonb_typeof(p_meta) <> 'object' THEN
        RAISE EXCEPTION 'metadata must be a JSON object, got %', jsonb_typeof(p_meta) USING ERRCODE = '22023';
    END IF;
    IF array_position(p_tags, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'tags must not contain NULL' USING ERRCODE = '22023';
    END IF;
    s := jsonb_build_object('metadata', p_meta, 'tags', to_jsonb(p_tags));
    s := CASE WHEN p_external IS NULL THEN memmie._with_content(s, p_user, p_content, p_type)
              ELSE memmie._with_external(s, p_user, p_external, p_type) END;
    PERFORM memmie._check_depth(s, 'blob state (metadata or JSON content)');
    INSERT INTO memmie.blobs (user_id, content_hash, content_size, content_type, version,
                              parent_blob_id, root_blob_id, depth, created_by, metadata, tags)
    VALUES (p_user, s ->> 'content_hash', (s ->> 'content_size')::bigint, p_type, 1,
            parent.id, coalesce(parent.root_blob_id, parent.id), coalesce(parent.depth + 1, 0),
            p_by, p_meta, p_tags)
    RETURNING * INTO b;
    IF parent.id IS NOT NULL THEN
        INSERT INTO memmie.blob_edges (parent_blob_id, child_blob_id, provider_id, transform_type,
                                       version_map)
        VALUES (parent.id, b.id, p_by, p_transform,
                jsonb_build_array(jsonb_build_object('parent_version', parent.version,
                                                     'child_version', 1)));
    END IF;
    PERFORM memmie._record_version(b, p_operation,
        jsonb_build_array(jsonb_build_object('op', 'replace', 'path', '', 'value', s)),
        p_by, p_caused_by, p_caused_event, 'blob.created');
    PERFORM memmie._check_quotas(p_user);
    RETURN b;
END
$$;

CREATE OR REPLACE FUNCTION memmie._replace_content(b memmie.blobs, p_content bytea, p_type text, p_by text,
                                        p_caused_by uuid DEFAULT NULL,
                                        p_caused_event jsonb DEFAULT NULL,
                                        p_meta jsonb DEFAULT NULL, p_tags text[] DEFAULT NULL,
                                        p_external jsonb DEFAULT NULL)
RETURNS memmie.blobs
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    old_s jsonb := memmie._head_state(b);
    new_s jsonb := old_s;
BEGIN
    IF p_meta IS NOT NULL THEN
        new_s := new_s || jsonb_build_object('metadata', p_meta);
    END IF;
    IF p_tags IS NOT NULL THEN
        new_s := new_s || jsonb_build_object('tags', to_jsonb(p_tags));
    END IF;
    new_s := CASE WHEN p_external IS NULL
                  THEN memmie._with_content(new_s, b.user_id, p_content, coalesce(p_type, b.content_type))
                  ELSE memmie._with_external(new_s, b.user_id, p_external, coalesce(p_type, b.content_type)) END;
    PERFORM memmie._check_depth(new_s, 'blob state (metadata or JSON content)');
    PERFORM memmie._write_state(b, new_s, memmie._operation(p_by),
                                memmie.jsonb_diff(old_s, new_s), p_by, p_caused_by, p_caused_event);
    PERFORM memmie._check_quotas(b.user_id);
    SELECT * INTO b FROM memmie.blobs x WHERE x.id = b.id;
    RETURN b;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- check() replays each blob's history once (linear in the deltas, not quadratic), and reports a
-- delta that cannot be applied as a row instead of failing.
CREATE FUNCTION memmie._replay_mismatches()
RETURNS TABLE (blob_id uuid, version int, problem text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r      record;
    cur    uuid;
    s      jsonb;
    broken boolean;
BEGIN
    FOR r IN
        SELECT coalesce(v.blob_id, d.blob_id) AS blob_id, coalesce(v.version, d.to_version) AS version,
               d.patch, v.blob_id IS NOT NULL AS has_version,
               memmie._make_state(v.content_hash, v.content_size, v.content_type, v.metadata, v.tags,
                                  v.deleted) AS stored
        FROM memmie.blob_versions v
        FULL JOIN (SELECT x.blob_id, x.to_version, x.patch FROM memmie.deltas x WHERE x.status = 'applied') d
               ON d.blob_id = v.blob_id AND d.to_version = v.version
        ORDER BY 1, 2
    LOOP
        IF r.blob_id IS DISTINCT FROM cur THEN
            cur := r.blob_id;
            s := NULL;
            broken := false;
        END IF;
        CONTINUE WHEN broken;
        IF r.patch IS NOT NULL THEN
            BEGIN
                -- replay's own engine and limits, as blob_state uses them (a state may nest 128
                -- levels, its patch two more: more than jsonb_patch reads), from the state so far
                s := memmie._replay(CASE WHEN s IS NULL THEN ARRAY[r.patch::pg_catalog.text]
                                         ELSE ARRAY['[{"op": "add", "path": "", "value": ' OPERATOR(pg_catalog.||)
                                                    s::pg_catalog.text OPERATOR(pg_catalog.||) '}]',
                                                    r.patch::pg_catalog.text] END)::pg_catalog.jsonb;
            EXCEPTION WHEN OTHERS THEN
                blob_id := r.blob_id;
                version := r.version;
                problem := format('its delta does not apply (%s: %s)', SQLSTATE, SQLERRM);
                broken := true;
                RETURN NEXT;
                CONTINUE;
            END;
        END IF;
        IF r.has_version AND s IS DISTINCT FROM r.stored THEN
            blob_id := r.blob_id;
            version := r.version;
            problem := NULL;
            RETURN NEXT;
        END IF;
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION memmie.check()
RETURNS TABLE (check_name text, ok boolean, detail text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    bad    bigint;
    sample text;
    total  bigint;
BEGIN
    -- reference counts = version rows naming each content (the stored count, plus what this
    -- transaction has changed and will write when it commits)
    SELECT count(*), string_agg(format('%s has %s, %s versions name it', x.content_hash, x.reference_count, x.refs), '; ')
           FILTER (WHERE x.rn <= 3)
    INTO bad, sample
    FROM (SELECT c.content_hash, c.reference_count + coalesce(p.n, 0) AS reference_count, coalesce(v.refs, 0) AS refs,
                 row_number() OVER (ORDER BY c.content_hash) AS rn
          FROM memmie.content_storage c
          LEFT JOIN (SELECT content_hash, count(*) AS refs FROM memmie.blob_versions GROUP BY 1) v
                 ON v.content_hash = c.content_hash
          LEFT JOIN memmie._pending_references() p ON p.content_hash = c.content_hash
          WHERE c.reference_count + coalesce(p.n, 0) <> coalesce(v.refs, 0)) x;
    SELECT count(*) INTO total FROM memmie.content_storage;
    RETURN QUERY SELECT * FROM memmie._check_row('reference_counts', bad, sample,
                                                 format('%s contents', total));

    -- replaying each blob's deltas gives every version's stored state; the head is the last one
    SELECT count(*), string_agg(format('blob %s version %s', x.blob_id, x.version) || coalesce(': ' || x.problem, ''), '; ')
                     FILTER (WHERE x.rn <= 3)
    INTO bad, sample
    FROM (SELECT m.blob_id, m.version, m.problem, row_number() OVER (ORDER BY m.blob_id, m.version) AS rn
          FROM memmie._replay_mismatches() m) x;
    SELECT count(*) INTO total FROM memmie.blob_versions;
    RETURN QUERY SELECT * FROM memmie._check_row('replay', bad, sample, format('%s versions replayed', total));

    SELECT count(*), string_agg(format('blob %s', x.id), '; ') FILTER (WHERE x.rn <= 3)
    INTO bad, sample
    FROM (SELECT b.id, row_number() OVER (ORDER BY b.id) AS rn
          FROM memmie.blobs b
          LEFT JOIN memmie.blob_versions v ON v.blob_id = b.id AND v.version = b.version
          WHERE v.blob_id IS NULL
             OR (b.content_hash, b.content_size, b.content_type, b.metadata, b.tags, b.deleted_at IS NOT NULL)
                IS DISTINCT FROM (v.content_hash, v.content_size, v.content_type, v.metadata, v.tags, v.deleted)
             OR (SELECT count(*) FROM memmie.blob_versions w WHERE w.blob_id = b.id) <> b.version) x;
    SELECT count(*) INTO total FROM memmie.blobs;
    RETURN QUERY SELECT * FROM memmie._check_row('heads', bad, sample,
                                                 format('%s blobs: head = latest version, versions dense', total));

    -- stored bytes still hash to their names
    SELECT count(*), string_agg(format('%s: %s', x.content_hash, x.detail), '; ') FILTER (WHERE x.rn <= 3)
    INTO bad, sample
    FROM (SELECT r.content_hash, r.detail, row_number() OVER (ORDER BY r.content_hash) AS rn
          FROM memmie.verify_content() r WHERE NOT r.ok) x;
    SELECT count(*) INTO total FROM memmie.content_storage WHERE storage_backend = 'postgres';
    RETURN QUERY SELECT * FROM memmie._check_row('content_hashes', bad, sample, format('%s contents re-hashed', total));

    -- storage_used and blob_count (with this transaction's changes, written at its commit)
    -- against a recomputation
    SELECT count(*), string_agg(format('user %s: storage %s (recomputed %s), blobs %s (recomputed %s)',
                                       x.user_id, x.storage_used, x.storage, x.blob_count, x.blobs), '; ')
           FILTER (WHERE x.rn <= 3)
    INTO bad, sample
    FROM (SELECT u.user_id, u.storage_used, u.blob_count, coalesce(s.storage, 0) AS storage,
                 coalesce(n.blobs, 0) AS blobs, row_number() OVER (ORDER BY u.user_id) AS rn
          FROM (SELECT c.user_id, c.storage_used + coalesce(p.storage_used, 0) AS storage_used,
                       c.blob_count + coalesce(p.blob_count, 0) AS blob_count
                FROM memmie.user_contexts c
                LEFT JOIN memmie._pending_user_counts() p ON p.user_id = c.user_id) u
          LEFT JOIN (SELECT d.user_id, sum(d.content_size) AS storage
                     FROM (SELECT DISTINCT v.user_id, v.content_hash, v.content_size FROM memmie.blob_versions v) d
                     GROUP BY 1) s ON s.user_id = u.user_id
          LEFT JOIN (SELECT b.user_id, count(*) AS blobs FROM memmie.blobs b WHERE b.deleted_at IS NULL GROUP BY 1) n
                 ON n.user_id = u.user_id
          WHERE u.storage_used <> coalesce(s.storage, 0) OR u.blob_count <> coalesce(n.blobs, 0)) x;
    SELECT count(*) INTO total FROM memmie.user_contexts;
    RETURN QUERY SELECT * FROM memmie._check_row('user_accounting', bad, sample, format('%s users', total));

    -- edges join blobs of one user; every parent_blob_id has its edge
    SELECT count(*), string_agg(x.what, '; ') FILTER (WHERE x.rn <= 3)
    INTO bad, sample
    FROM (SELECT y.what, row_number() OVER (ORDER BY y.what) AS rn FROM (
              SELECT format('edge %s -> %s crosses users', e.parent_blob_id, e.child_blob_id) AS what
              FROM memmie.blob_edges e JOIN memmie.blobs p ON p.id = e.parent_blob_id
              JOIN memmie.blobs c ON c.id = e.child_blob_id
              WHERE p.user_id <> c.user_id
              UNION ALL
              SELECT format('blob %s has parent %s without an edge', b.id, b.parent_blob_id)
              FROM memmie.blobs b
              WHERE b.parent_blob_id IS NOT NULL
                AND NOT EXISTS (SELECT FROM memmie.blob_edges e
                                WHERE e.parent_blob_id = b.parent_blob_id AND e.child_blob_id = b.id)) y) x;
    SELECT count(*) INTO total FROM memmie.blob_edges;
    RETURN QUERY SELECT * FROM memmie._check_row('edges', bad, sample, format('%s edges', total));

    -- every delta and event lies in a partition of its own period, not in the DEFAULT one
    SELECT (SELECT count(*) FROM memmie.deltas_default) + (SELECT count(*) FROM memmie.events_default),
           format('%s deltas and %s events in the DEFAULT partitions (run memmie.create_partitions)',
                  (SELECT count(*) FROM memmie.deltas_default), (SELECT count(*) FROM memmie.events_default))
    INTO bad, sample;
    RETURN QUERY SELECT * FROM memmie._check_row('partitions', bad, sample,
                                                 'no delta or event in a DEFAULT partition');
END
$$;

REVOKE ALL ON FUNCTION memmie._replay_mismatches() FROM PUBLIC;

-- ---------------------------------------------------------------------------------------------
-- register_provider checks a text field's length before assigning it to its varchar column
-- (22023 naming the field, not 22001 from the column).
CREATE OR REPLACE FUNCTION memmie._provider_from_definition(def jsonb) RETURNS memmie.providers
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    p       memmie.providers;
    unknown text;
    pat     text;
    t       text;
    field   text;
    max_len int;
BEGIN
    IF def IS NULL OR jsonb_typeof(def) <> 'object' THEN
        RAISE EXCEPTION 'provider definition must be a JSON object, got %', coalesce(jsonb_typeof(def), 'NULL')
            USING ERRCODE = '22023';
    END IF;
    SELECT string_agg(format('"%s"', k), ', ' ORDER BY k) INTO unknown
    FROM jsonb_object_keys(def) k
    WHERE k NOT IN ('id', 'name', 'description', 'category', 'version', 'workflow_id', 'config',
                    'trigger_events', 'supported_types', 'max_input_size', 'timeout_seconds',
                    'input_schema', 'output_schema', 'config_schema', 'processing_rules', 'status',
                    'author', 'license', 'documentation_url');
    IF unknown IS NOT NULL THEN
        RAISE EXCEPTION 'provider definition has unknown keys: %', unknown USING ERRCODE = '22023';
    END IF;
    -- the lengths are checked on the text, before it is assigned to p's varchar fields (which
    -- would refuse a longer one with 22001)
    t := memmie._def_field(def, 'id', 'string', true) #>> '{}';
    IF length(t) > 255 OR t = 'user' THEN
        RAISE EXCEPTION 'invalid provider id "%": 1 to 255 characters, and not "user"', t
            USING ERRCODE = '22023';
    END IF;
    p.id := t;
    FOR field, max_len IN VALUES ('name', 255), ('version', 50), ('category', 100), ('workflow_id', 255),
                                 ('author', 255), ('license', 100) LOOP
        t := memmie._def_field(def, field, 'string', field IN ('name', 'version')) #>> '{}';
        IF length(t) > max_len THEN
            RAISE EXCEPTION 'provider definition: "%" must be at most % characters, got %', field, max_len, length(t)
                USING ERRCODE = '22023';
        END IF;
    END LOOP;
    p.name := def ->> 'name';
    p.version := def ->> 'version';
    p.category := def ->> 'category';
    p.workflow_id := def ->> 'workflow_id';
    p.author := def ->> 'author';
    p.license := def ->> 'license';
    p.description := memmie._def_field(def, 'description', 'string') #>> '{}';
    p.documentation_url := memmie._def_field(def, 'documentation_url', 'string') #>> '{}';
    p.config := coalesce(memmie._def_field(def, 'config', 'object'), '{}');
    p.trigger_events := ARRAY(SELECT jsonb_array_elements_text(
                                  coalesce(memmie._def_field(def, 'trigger_events', 'array'), '[]')));
    p.supported_types := ARRAY(SELECT jsonb_array_elements_text(
                                   coalesce(memmie._def_field(def, 'supported_types', 'array'), '[]')));
    FOREACH pat IN ARRAY p.supported_types LOOP
        PERFORM memmie._check_mime_pattern(pat);
    END LOOP;
    p.max_input_size := (memmie._def_field(def, 'max_input_size', 'integer') #>> '{}')::bigint;
    p.timeout_seconds := coalesce((memmie._def_field(def, 'timeout_seconds', 'integer') #>> '{}')::bigint, 30);
    IF p.timeout_seconds < 1 OR p.timeout_seconds > 86400 THEN
        RAISE EXCEPTION 'provider definition: "timeout_seconds" must be between 1 and 86400, got %',
            p.timeout_seconds USING ERRCODE = '22023';
    END IF;
    p.input_schema := memmie._def_field(def, 'input_schema', 'schema');
    p.output_schema := memmie._def_field(def, 'output_schema', 'schema');
    p.config_schema := memmie._def_field(def, 'config_schema', 'schema');
    p.processing_rules := coalesce(memmie._def_field(def, 'processing_rules', 'object'), '{}');
    IF p.processing_rules ? 'max_retries'
       AND (p.processing_rules -> 'max_retries')::text !~ '^[0-9]{1,4}$' THEN
        RAISE EXCEPTION 'provider definition: processing_rules.max_retries must be an integer from 0 to 9999'
            USING ERRCODE = '22023';
    END IF;
    -- content_changes_only: dispatch skips a blob.updated whose content is that of the version
    -- before (a tag or metadata edit); delete_with_parent: soft-deleting a blob soft-deletes the
    -- blobs this provider derived from it (see delete_blob)
    FOREACH field IN ARRAY ARRAY['content_changes_only', 'delete_with_parent'] LOOP
        IF p.processing_rules ? field AND jsonb_typeof(p.processing_rules -> field) <> 'boolean' THEN
            RAISE EXCEPTION 'provider definition: processing_rules.% must be true or false, got %',
                field, p.processing_rules -> field USING ERRCODE = '22023';
        END IF;
    END LOOP;
    p.status := coalesce(memmie._def_field(def, 'status', 'string') #>> '{}', 'active');
    IF p.status NOT IN ('active', 'inactive', 'deprecated') THEN
        RAISE EXCEPTION 'invalid provider status "%": expected active, inactive or deprecated', p.status
            USING ERRCODE = '22023';
    END IF;
    IF p.config_schema IS NOT NULL THEN
        PERFORM memmie._validate_json(p.config_schema, p.config, format('config of provider %s', p.id));
    END IF;
    RETURN p;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- A job cancelled under its worker (its blob deleted) says so in the MM005 message, also to
-- complete_processing / fail_processing of the processing that went with the blob.
CREATE OR REPLACE FUNCTION memmie._check_lease(j memmie.jobs, p_worker text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM memmie._require(p_worker, 'worker_id');
    -- a job cancelled under its worker (its blob deleted, cancel_job) says why in the message
    IF j.status = 'cancelled' THEN
        RAISE EXCEPTION 'job % was cancelled%: worker % does not hold its lease any more', j.id,
            coalesce(' (' || j.error_message || ')', ''), p_worker
            USING ERRCODE = 'MM005', DETAIL = 'the job is cancelled';
    END IF;
    IF j.status <> 'running' OR j.worker_id IS DISTINCT FROM p_worker THEN
        RAISE EXCEPTION 'worker % does not hold the lease of job %', p_worker, j.id
            USING ERRCODE = 'MM005',
                  DETAIL = format('the job is %s%s', j.status,
                                  CASE WHEN j.status = 'running' THEN ', leased to ' || j.worker_id ELSE '' END);
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION memmie._leased_processing(p_processing uuid, p_worker text)
RETURNS memmie.provider_processing
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    pr memmie.provider_processing;
    j  memmie.jobs;
BEGIN
    SELECT * INTO pr FROM memmie.provider_processing x
    WHERE x.id = memmie._require(p_processing, 'processing_id');
    IF NOT FOUND THEN
        -- deleted with its blob: its job, cancelled then, says so to the worker that had it
        SELECT * INTO j FROM memmie.jobs x WHERE x.id = p_processing::pg_catalog.text;
        IF FOUND THEN
            PERFORM memmie._check_lease(j, p_worker);
        END IF;
        RAISE EXCEPTION 'processing % does not exist', p_processing USING ERRCODE = 'P0002';
    END IF;
    PERFORM memmie._check_lease(memmie._lock_job(pr.job_id), p_worker);
    RETURN pr;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- dag_statistics computed natively, linear in the edges (src/dag_statistics.rs). The view is
-- made again; whatever was granted on it is granted again.
CREATE FUNCTION memmie."_dag_statistics"() RETURNS TABLE (
	"root_id" uuid,
	"total_nodes" bigint,
	"max_depth" INT,
	"unique_levels" INT
)
STRICT STABLE PARALLEL SAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'dag_statistics_wrapper';
REVOKE ALL ON FUNCTION memmie._dag_statistics() FROM PUBLIC;

DO $$
DECLARE
    acl pg_catalog.aclitem[] := (SELECT relacl FROM pg_catalog.pg_class
                                 WHERE oid OPERATOR(pg_catalog.=) 'memmie.dag_statistics'::pg_catalog.regclass);
    g   record;
BEGIN
    DROP MATERIALIZED VIEW memmie.dag_statistics;
    CREATE MATERIALIZED VIEW memmie.dag_statistics AS
    SELECT root_id, total_nodes, max_depth, unique_levels FROM memmie._dag_statistics();
    CREATE UNIQUE INDEX idx_dag_statistics ON memmie.dag_statistics (root_id);
    FOR g IN SELECT a.grantee, a.privilege_type, a.is_grantable FROM pg_catalog.aclexplode(acl) a
             WHERE a.grantee OPERATOR(pg_catalog.<>) a.grantor LOOP
        EXECUTE pg_catalog.format('GRANT %s ON memmie.dag_statistics TO %s%s', g.privilege_type,
            CASE WHEN g.grantee OPERATOR(pg_catalog.=) 0 THEN 'PUBLIC' ELSE g.grantee::pg_catalog.regrole::pg_catalog.text END,
            CASE WHEN g.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
    END LOOP;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- reprocess() of a processing done before names the provider's current version in its job's
-- input too (the job carried the version it first ran with).
CREATE OR REPLACE FUNCTION memmie.reprocess(blob_id uuid, provider_id text) RETURNS uuid
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    p   memmie.providers := memmie._require_provider(reprocess.provider_id);
    b   memmie.blobs;
    pr  memmie.provider_processing;
    ids uuid[];
BEGIN
    SELECT * INTO b FROM memmie.blobs x WHERE x.id = memmie._require(reprocess.blob_id, 'blob_id');
    IF NOT FOUND OR b.deleted_at IS NOT NULL THEN
        RAISE EXCEPTION 'blob % does not exist', reprocess.blob_id USING ERRCODE = 'P0002';
    END IF;
    ids := memmie._queue_processing(ARRAY[b.id], ARRAY[p.id::text], ARRAY['{"reprocess": true}'::jsonb]);
    IF cardinality(ids) > 0 THEN
        RETURN ids[1];
    END IF;
    -- processed at this version before: run it again (its job is queued anew), by the
    -- provider's current version, which the processing records and the job's input names
    SELECT * INTO pr FROM memmie.provider_processing x
    WHERE x.blob_id = b.id AND x.provider_id = p.id AND x.processed_version = b.version;
    PERFORM memmie._lock_job(pr.job_id);
    UPDATE memmie.jobs j
    SET status = 'queued', retry_count = 0, run_after = clock_timestamp(), worker_id = NULL,
        lease_expires_at = NULL, completed_at = NULL, output = NULL, error_message = NULL, progress = 0,
        input = j.input || jsonb_build_object('provider_version', p.version)
    WHERE j.id = pr.job_id AND j.status NOT IN ('queued', 'running');
    IF FOUND THEN
        UPDATE memmie.provider_processing x
        SET status = 'pending', provider_version = p.version, error_message = NULL,
            completed_at = NULL, queued_at = clock_timestamp(),
            metadata = x.metadata || '{"reprocess": true}'
        WHERE x.id = pr.id;
        PERFORM pg_notify('memmie_jobs', 'memmie.process');
    END IF;
    RETURN pr.id;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- claim_jobs() holds the processings of a provider that is not active (inactive, deprecated).
CREATE OR REPLACE FUNCTION memmie.claim_jobs(worker_id text, max_jobs int DEFAULT 1,
                                  lease interval DEFAULT '5 minutes', job_types text[] DEFAULT NULL)
RETURNS SETOF memmie.jobs
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    t_now timestamptz;
BEGIN
    IF claim_jobs.worker_id IS NULL OR btrim(claim_jobs.worker_id) = '' OR length(claim_jobs.worker_id) > 255 THEN
        PERFORM memmie._check_text(claim_jobs.worker_id, 'worker_id', 255);
    END IF;
    IF claim_jobs.max_jobs IS NULL OR claim_jobs.max_jobs < 1 OR claim_jobs.max_jobs > 10000 THEN
        RAISE EXCEPTION 'max_jobs must be between 1 and 10000, got %', claim_jobs.max_jobs USING ERRCODE = '22023';
    END IF;
    IF claim_jobs.lease IS NULL OR claim_jobs.lease <= interval '0' THEN
        RAISE EXCEPTION 'lease must be a positive interval, got %', claim_jobs.lease USING ERRCODE = '22023';
    END IF;
    -- Take back jobs whose lease expired (at most 100 per call): queued again (one more attempt
    -- used), or failed when none is left. (t_now is a variable, not clock_timestamp() in the
    -- query, so that both conditions are index conditions.)
    t_now := clock_timestamp();
    -- (looked for first: a query costs a fraction of an UPDATE that finds nothing)
    IF EXISTS (SELECT FROM memmie.jobs j WHERE j.status = 'running' AND j.lease_expires_at < memmie._clock()) THEN
        WITH expired AS MATERIALIZED (
            SELECT j.id FROM memmie.jobs j
            WHERE j.status = 'running' AND j.lease_expires_at < t_now
            ORDER BY j.lease_expires_at
            LIMIT 100
            FOR UPDATE SKIP LOCKED
        )
        UPDATE memmie.jobs j
        SET status = CASE WHEN j.retry_count < j.max_retries THEN 'queued' ELSE 'failed' END,
            retry_count = least(j.retry_count + 1, j.max_retries),
            error_message = format('lease of worker %s expired at %s', j.worker_id, j.lease_expires_at),
            completed_at = CASE WHEN j.retry_count < j.max_retries THEN NULL ELSE t_now END,
            run_after = t_now, worker_id = NULL, lease_expires_at = NULL
        FROM expired e WHERE j.id = e.id;
    END IF;

    -- The claim is written twice on purpose. A LIMIT given as a parameter makes PostgreSQL plan
    -- the statement anew on every call (about half of a one-job claim's time) or, once it
    -- settles on a generic plan, sort every queued job. The usual worker's call, one job of one
    -- type, has its own statement with LIMIT 1, planned once: the type is a range of one value
    -- and leads the ORDER BY, so that only idx_jobs_queued_type gives the order (with an
    -- equality, the plan made without knowing the type guesses how much of the queue is of it
    -- and may walk idx_jobs_queued past every queued job of the other types). Every other call
    -- is planned with its arguments, where the conditions on job_types fold to the one that
    -- applies (one type: idx_jobs_queued_type; none: idx_jobs_queued).
    -- A provider's processings (job_type 'memmie.process', input.provider_id) are held while
    -- the provider is inactive or deprecated (set_provider_status): skipped, still queued, and
    -- handed out again once it is active. One primary-key lookup of memmie.providers per
    -- candidate, inside the cached plan.
    IF array_ndims(claim_jobs.job_types) > 1 OR array_lower(claim_jobs.job_types, 1) <> 1 THEN
        claim_jobs.job_types := ARRAY(SELECT unnest(claim_jobs.job_types));   -- the plain form
    END IF;
    IF claim_jobs.max_jobs = 1 AND cardinality(claim_jobs.job_types) = 1 THEN
        RETURN QUERY
        WITH c AS MATERIALIZED (
            SELECT j.id FROM memmie.jobs j
            WHERE j.status = 'queued' AND j.run_after <= t_now
              AND j.job_type >= claim_jobs.job_types[1] AND j.job_type <= claim_jobs.job_types[1]
              AND (j.expires_at IS NULL OR j.expires_at > t_now)
              AND (j.job_type <> 'memmie.process' OR NOT EXISTS (
                       SELECT FROM memmie.providers p
                       WHERE p.id = j.input ->> 'provider_id' AND p.status <> 'active'))
            ORDER BY j.job_type, j.run_after, j.created_at, j.id
            LIMIT 1
            FOR UPDATE SKIP LOCKED
        )
        UPDATE memmie.jobs j
        SET status = 'running', worker_id = claim_jobs.worker_id,
            lease_expires_at = t_now + claim_jobs.lease, lease_duration = claim_jobs.lease,
            heartbeat_at = t_now, started_at = t_now, progress = 0
        FROM c WHERE j.id = c.id
        RETURNING j.*;
    ELSE
        RETURN QUERY
        WITH c AS MATERIALIZED (
            SELECT j.id FROM memmie.jobs j
            WHERE j.status = 'queued' AND j.run_after <= t_now
              AND (j.expires_at IS NULL OR j.expires_at > t_now)
              AND (claim_jobs.job_types IS NULL
                   OR (cardinality(claim_jobs.job_types) = 1 AND j.job_type = claim_jobs.job_types[1])
                   OR (cardinality(claim_jobs.job_types) > 1 AND j.job_type = ANY (claim_jobs.job_types)))
              AND (j.job_type <> 'memmie.process' OR NOT EXISTS (
                       SELECT FROM memmie.providers p
                       WHERE p.id = j.input ->> 'provider_id' AND p.status <> 'active'))
            ORDER BY j.run_after, j.created_at, j.id
            LIMIT claim_jobs.max_jobs
            FOR UPDATE SKIP LOCKED
        )
        UPDATE memmie.jobs j
        SET status = 'running', worker_id = claim_jobs.worker_id,
            lease_expires_at = t_now + claim_jobs.lease, lease_duration = claim_jobs.lease,
            heartbeat_at = t_now, started_at = t_now, progress = 0
        FROM c WHERE j.id = c.id
        RETURNING j.*;
    END IF;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- undelete_blob(); delete_blob() and revert_blob() take expected_version (MM001), last and
-- defaulted so that existing calls keep working. A new signature is a new function: the old one
-- is dropped and whatever was granted on it is granted on the new one.
CREATE TEMP TABLE _memmie_old_acl ON COMMIT DROP AS
SELECT p.proname::pg_catalog.text AS name, p.proacl AS acl FROM pg_catalog.pg_proc p
WHERE p.oid OPERATOR(pg_catalog.=) ANY (ARRAY['memmie.delete_blob(uuid,boolean)'::pg_catalog.regprocedure,
                                            'memmie.revert_blob(uuid,integer,text)'::pg_catalog.regprocedure]);
DROP FUNCTION memmie.delete_blob(uuid, boolean);
DROP FUNCTION memmie.revert_blob(uuid, integer, text);

CREATE FUNCTION memmie.revert_blob(blob_id uuid, to_version int, provider_id text DEFAULT 'user',
                                   expected_version int DEFAULT NULL)
RETURNS memmie.blobs
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    p_by  text := memmie._check_provider(revert_blob.provider_id);
    b     memmie.blobs;
    v     memmie.blob_versions;
    old_s jsonb;
    new_s jsonb;
BEGIN
    PERFORM memmie._require(revert_blob.to_version, 'to_version');
    b := memmie._lock_blob(revert_blob.blob_id);
    PERFORM memmie._check_expected(b, revert_blob.expected_version);
    SELECT * INTO v FROM memmie.blob_versions x
    WHERE x.blob_id = b.id AND x.version = revert_blob.to_version;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'blob % has no version %', b.id, revert_blob.to_version USING ERRCODE = 'P0002';
    END IF;
    old_s := memmie._head_state(b);
    new_s := memmie._make_state(v.content_hash, v.content_size, v.content_type, v.metadata, v.tags,
                                v.deleted);
    PERFORM memmie._write_state(b, new_s, 'revert', memmie.jsonb_diff(old_s, new_s), p_by);
    PERFORM memmie._check_quotas(b.user_id);
    SELECT * INTO b FROM memmie.blobs x WHERE x.id = revert_blob.blob_id;
    RETURN b;
END
$$;

REVOKE ALL ON FUNCTION memmie.revert_blob(uuid,integer,text,integer) FROM PUBLIC;

CREATE FUNCTION memmie.delete_blob(blob_id uuid, hard boolean DEFAULT false,
                                   expected_version int DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    b        memmie.blobs;
    event_id uuid;
    child    uuid;
BEGIN
    PERFORM memmie._require(delete_blob.hard, 'hard');
    b := memmie._lock_blob(delete_blob.blob_id);
    PERFORM memmie._check_expected(b, delete_blob.expected_version);
    IF delete_blob.hard THEN
        INSERT INTO memmie.events (event_type, aggregate_id, aggregate_type, user_id, payload, created_at)
        VALUES ('blob.deleted', b.id, 'blob', b.user_id,
                jsonb_build_object('blob_id', b.id, 'version', b.version, 'delta_id', NULL,
                                   'operation', 'delete', 'content_type', b.content_type,
                                   'created_by', b.created_by, 'hard', true), clock_timestamp())
        RETURNING id INTO event_id;
        PERFORM pg_notify('memmie_events', event_id::text);
        DELETE FROM memmie.blobs x WHERE x.id = b.id;
        INSERT INTO memmie.usage_increments (user_id, storage_bytes_used)
        SELECT b.user_id, u.storage_used FROM memmie._user_counts(b.user_id) u WHERE u.storage_used IS NOT NULL;
    ELSIF b.deleted_at IS NULL THEN
        PERFORM memmie._write_state(b, memmie._head_state(b) || '{"deleted": true}', 'delete',
                                    '[{"op": "add", "path": "/deleted", "value": true}]',
                                    'user');
        -- Blobs derived from it stay live and listed, unless the provider that derived one has
        -- processing_rules.delete_with_parent: those are soft-deleted with it (and theirs in
        -- turn). undelete_blob brings back only the blob it is given.
        FOR child IN
            SELECT DISTINCT e.child_blob_id
            FROM memmie.blob_edges e
            JOIN memmie.providers p ON p.id = e.provider_id
            JOIN memmie.blobs c ON c.id = e.child_blob_id
            WHERE e.parent_blob_id = b.id AND c.deleted_at IS NULL
              AND (p.processing_rules ->> 'delete_with_parent')::boolean IS TRUE
            ORDER BY e.child_blob_id
        LOOP
            PERFORM memmie.delete_blob(child);
        END LOOP;
    END IF;
END
$$;

REVOKE ALL ON FUNCTION memmie.delete_blob(uuid,boolean,integer) FROM PUBLIC;

CREATE FUNCTION memmie.undelete_blob(blob_id uuid, expected_version int DEFAULT NULL)
RETURNS memmie.blobs
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    b     memmie.blobs := memmie._lock_blob(undelete_blob.blob_id);
    old_s jsonb;
BEGIN
    PERFORM memmie._check_expected(b, undelete_blob.expected_version);
    IF b.deleted_at IS NULL THEN
        RAISE EXCEPTION 'blob % is not deleted', b.id USING ERRCODE = '22023';
    END IF;
    old_s := memmie._head_state(b);
    PERFORM memmie._write_state(b, old_s - 'deleted', 'revert',
                                '[{"op": "remove", "path": "/deleted"}]', 'user');
    PERFORM memmie._check_quotas(b.user_id);
    SELECT * INTO b FROM memmie.blobs x WHERE x.id = undelete_blob.blob_id;
    RETURN b;
END
$$;

REVOKE ALL ON FUNCTION memmie.undelete_blob(uuid,integer) FROM PUBLIC;

DO $$
DECLARE
    g record;
BEGIN
    FOR g IN SELECT o.name, a.grantee, a.privilege_type, a.is_grantable
             FROM pg_temp._memmie_old_acl o, pg_catalog.aclexplode(o.acl) a
             WHERE a.grantee OPERATOR(pg_catalog.<>) a.grantor LOOP
        EXECUTE pg_catalog.format('GRANT %s ON FUNCTION %s TO %s%s', g.privilege_type,
            CASE g.name WHEN 'delete_blob' THEN 'memmie.delete_blob(uuid,boolean,integer)'
                        ELSE 'memmie.revert_blob(uuid,integer,text,integer)' END,
            CASE WHEN g.grantee OPERATOR(pg_catalog.=) 0 THEN 'PUBLIC' ELSE g.grantee::pg_catalog.regrole::pg_catalog.text END,
            CASE WHEN g.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
    END LOOP;
END
$$;
DROP TABLE pg_temp._memmie_old_acl;

-- a deleted blob's hint names undelete_blob()
CREATE OR REPLACE FUNCTION memmie._check_live(b memmie.blobs) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF b.deleted_at IS NOT NULL THEN
        RAISE EXCEPTION 'blob % is deleted', b.id USING ERRCODE = 'P0002',
            HINT = 'undelete_blob() brings it back';
    END IF;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- Bulk writes inside one transaction stay flat (issue 15): user_contexts.blob_count and
-- storage_used are noted per user in backend memory and written at commit with the reference
-- counts (src/refcount.rs), instead of an UPDATE of the user's row at every write (each made a
-- row version that every later lookup of the row in the transaction stepped over). Inside the
-- transaction memmie._pending_user_counts() lists them; quota checks, check() and the usage
-- snapshots add them. blob_count's trigger is native (count_blobs) for it.
CREATE FUNCTION memmie."_pending_user_counts"() RETURNS TABLE (
	"user_id" uuid,
	"blob_count" bigint,
	"storage_used" bigint
)
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'pending_user_counts_wrapper';
REVOKE ALL ON FUNCTION memmie._pending_user_counts() FROM PUBLIC;
CREATE FUNCTION memmie."count_blobs"()
	RETURNS TRIGGER
	LANGUAGE c
	AS 'MODULE_PATHNAME', 'count_blobs_wrapper';
REVOKE ALL ON FUNCTION memmie.count_blobs() FROM PUBLIC;
DROP TRIGGER count_blobs_insert_delete ON memmie.blobs;
DROP TRIGGER count_blobs_update ON memmie.blobs;
DROP FUNCTION memmie._count_blobs();
CREATE TRIGGER count_blobs_insert_delete AFTER INSERT OR DELETE ON memmie.blobs
    FOR EACH ROW EXECUTE FUNCTION memmie.count_blobs();
CREATE TRIGGER count_blobs_update AFTER UPDATE OF deleted_at, user_id ON memmie.blobs
    FOR EACH ROW WHEN ((OLD.deleted_at IS NULL) IS DISTINCT FROM (NEW.deleted_at IS NULL)
                       OR OLD.user_id IS DISTINCT FROM NEW.user_id)
    EXECUTE FUNCTION memmie.count_blobs();

CREATE FUNCTION memmie._user_counts(p_user uuid, OUT storage_used bigint, OUT blob_count bigint)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    SELECT u.storage_used + coalesce(p.storage_used, 0), u.blob_count + coalesce(p.blob_count, 0)
    INTO storage_used, blob_count
    FROM memmie.user_contexts u LEFT JOIN memmie._pending_user_counts() p ON p.user_id = u.user_id
    WHERE u.user_id = p_user;
END
$$;
REVOKE ALL ON FUNCTION memmie._user_counts(uuid) FROM PUBLIC;

CREATE OR REPLACE FUNCTION memmie._check_quotas(p_user uuid) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    u memmie.user_contexts;
    c record;
BEGIN
    SELECT * INTO u FROM memmie.user_contexts WHERE user_id = p_user;
    SELECT * INTO c FROM memmie._user_counts(p_user) c;
    u.storage_used := c.storage_used;
    u.blob_count := c.blob_count;
    IF u.storage_used > (u.quota_limits ->> 'max_storage_bytes')::numeric THEN
        RAISE EXCEPTION 'user % would use % bytes, over the max_storage_bytes quota (%)',
            p_user, u.storage_used, u.quota_limits ->> 'max_storage_bytes' USING ERRCODE = 'MM002';
    END IF;
    IF u.blob_count > (u.quota_limits ->> 'max_blobs')::numeric THEN
        RAISE EXCEPTION 'user % would have % blobs, over the max_blobs quota (%)',
            p_user, u.blob_count, u.quota_limits ->> 'max_blobs' USING ERRCODE = 'MM002';
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION memmie._record_version(b memmie.blobs, p_operation text, p_patch jsonb,
                                       p_provider text, p_caused_by uuid DEFAULT NULL,
                                       p_caused_event jsonb DEFAULT NULL,
                                       p_event_type text DEFAULT 'blob.updated',
                                       p_pending_delta uuid DEFAULT NULL)
RETURNS memmie.deltas
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    d        memmie.deltas;
    prev     uuid;
    event_id uuid;
BEGIN
    IF b.version > 1 THEN
        SELECT v.delta_id INTO prev FROM memmie.blob_versions v
        WHERE v.blob_id = b.id AND v.version = b.version - 1;
    END IF;
    IF p_pending_delta IS NULL THEN
        INSERT INTO memmie.deltas (blob_id, user_id, operation, provider_id, patch, from_version,
                                   to_version, previous_delta_id, caused_by_delta_id, caused_by_event,
                                   status, applied_at)
        VALUES (b.id, b.user_id, p_operation, p_provider, p_patch, b.version - 1, b.version, prev,
                p_caused_by, p_caused_event, 'applied', CURRENT_TIMESTAMP)
        RETURNING * INTO d;
    ELSE
        -- a delta recorded as pending (complete_processing) is now applied
        UPDATE memmie.deltas x
        SET operation = p_operation, provider_id = p_provider, patch = p_patch,
            from_version = b.version - 1, to_version = b.version, previous_delta_id = prev,
            caused_by_delta_id = p_caused_by, caused_by_event = p_caused_event,
            status = 'applied', applied_at = CURRENT_TIMESTAMP
        WHERE x.id = p_pending_delta AND x.blob_id = b.id
        RETURNING * INTO d;
    END IF;
    INSERT INTO memmie.blob_versions (blob_id, version, user_id, content_hash, content_size,
                                      content_type, metadata, tags, deleted, delta_id, created_by)
    VALUES (b.id, b.version, b.user_id, b.content_hash, b.content_size, b.content_type,
            b.metadata, b.tags, b.deleted_at IS NOT NULL, d.id, p_provider);
    -- the day's usage (sql/metrics.sql), with the user's storage after this version
    INSERT INTO memmie.usage_increments (user_id, blobs_created, deltas_applied, storage_bytes_used)
    SELECT b.user_id, (p_event_type = 'blob.created')::int, 1, u.storage_used
    FROM memmie._user_counts(b.user_id) u WHERE u.storage_used IS NOT NULL;
    -- clock time, not transaction time: events of one transaction keep the order they happened in
    INSERT INTO memmie.events (event_type, aggregate_id, aggregate_type, user_id, payload, created_at)
    VALUES (p_event_type, b.id, 'blob', b.user_id,
            jsonb_build_object('blob_id', b.id, 'version', b.version, 'delta_id', d.id,
                               'operation', p_operation, 'content_type', b.content_type,
                               'created_by', p_provider), clock_timestamp())
    RETURNING id INTO event_id;
    PERFORM pg_notify('memmie_events', event_id::text);
    RETURN d;
END
$$;

-- DAG changes update the user's row once per transaction, not at every edge (sql/dag.sql).
CREATE OR REPLACE FUNCTION memmie._lock_user_dag(p_user uuid) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM memmie._lock_user(p_user);
    UPDATE memmie.user_contexts SET updated_at = CURRENT_TIMESTAMP
    WHERE user_id = p_user AND xmin <> pg_current_xact_id()::xid;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- set_quota(); user_contexts.quota_limits holds only the quotas memmie knows. A 0.2.0 row with
-- another key (a misspelt "max_blob", never enforced) keeps it in settings.unknown_quota_limits,
-- with a WARNING naming the user: nothing changes in what is enforced, and the upgrade goes on.
CREATE FUNCTION memmie.set_quota(user_id uuid, limits jsonb) RETURNS memmie.user_contexts
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    p_user  uuid := memmie._require(set_quota.user_id, 'user_id');
    -- the quotas there are (user_contexts' constraint in schema.sql names the same)
    known   text[] := '{max_blobs,max_content_size,max_storage_bytes}';
    unknown text;
    bad     record;
    c       record;
    u       memmie.user_contexts;
BEGIN
    PERFORM memmie._require(set_quota.limits, 'limits');
    IF jsonb_typeof(set_quota.limits) <> 'object' THEN
        RAISE EXCEPTION 'limits must be a JSON object, got %', jsonb_typeof(set_quota.limits)
            USING ERRCODE = '22023';
    END IF;
    SELECT string_agg(format('"%s"', k), ', ' ORDER BY k) INTO unknown
    FROM jsonb_object_keys(set_quota.limits) k WHERE k <> ALL (known);
    IF unknown IS NOT NULL THEN
        RAISE EXCEPTION 'unknown quota keys: %', unknown USING ERRCODE = '22023',
            HINT = 'the quotas are ' || array_to_string(known, ', ');
    END IF;
    SELECT e.key, e.value INTO bad FROM jsonb_each(set_quota.limits) e
    WHERE jsonb_typeof(e.value) <> 'null'
      AND (jsonb_typeof(e.value) <> 'number' OR e.value::text !~ '^[0-9]{1,18}$')
    ORDER BY e.key LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'quota "%" must be a non-negative integer or null, got %', bad.key, bad.value
            USING ERRCODE = '22023';
    END IF;
    PERFORM memmie._lock_user(p_user);
    UPDATE memmie.user_contexts x
    SET quota_limits = jsonb_strip_nulls(x.quota_limits || set_quota.limits),
        updated_at = CURRENT_TIMESTAMP
    WHERE x.user_id = p_user
    RETURNING * INTO u;
    -- as the transaction sees them (the counts of its own writes are written at commit)
    SELECT * INTO c FROM memmie._user_counts(p_user) c;
    u.storage_used := c.storage_used;
    u.blob_count := c.blob_count;
    RETURN u;
END
$$;
REVOKE ALL ON FUNCTION memmie.set_quota(uuid,jsonb) FROM PUBLIC;

DO $$
DECLARE
    known pg_catalog.text[] := '{max_blobs,max_content_size,max_storage_bytes}';
    u     record;
BEGIN
    FOR u IN SELECT c.user_id, c.quota_limits OPERATOR(pg_catalog.-) known AS unknown
             FROM memmie.user_contexts c
             WHERE (c.quota_limits OPERATOR(pg_catalog.-) known) OPERATOR(pg_catalog.<>) '{}'::pg_catalog.jsonb
             ORDER BY c.user_id LOOP
        RAISE WARNING 'user %: unknown quota keys % moved to settings.unknown_quota_limits (they were never enforced)',
            u.user_id, u.unknown;
        UPDATE memmie.user_contexts c
        SET quota_limits = c.quota_limits OPERATOR(pg_catalog.-) (SELECT pg_catalog.array_agg(k) FROM pg_catalog.jsonb_object_keys(u.unknown) k),
            settings = c.settings OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object('unknown_quota_limits',
                           COALESCE(c.settings OPERATOR(pg_catalog.->) 'unknown_quota_limits', '{}'::pg_catalog.jsonb)
                           OPERATOR(pg_catalog.||) u.unknown)
        WHERE c.user_id OPERATOR(pg_catalog.=) u.user_id;
    END LOOP;
END
$$;
ALTER TABLE memmie.user_contexts DROP CONSTRAINT user_contexts_quota_limits_check,
    ADD CONSTRAINT user_contexts_quota_limits_check CHECK (
        pg_catalog.jsonb_typeof(quota_limits) OPERATOR(pg_catalog.=) 'object'
        AND NOT pg_catalog.jsonb_path_exists(quota_limits, '$.* ? (@.type() != "number" || @ < 0)')
        AND (quota_limits OPERATOR(pg_catalog.-) '{max_blobs,max_content_size,max_storage_bytes}'::pg_catalog.text[])
            OPERATOR(pg_catalog.=) '{}'::pg_catalog.jsonb);

-- ---------------------------------------------------------------------------------------------
-- find_blobs() takes content_type (a MIME pattern), roots_only, order_by and page_after_at (the
-- cursor's sort value: the page_after row need not exist any more), last and defaulted so that
-- existing calls keep working. A new signature is a new function: the old one is dropped and
-- whatever was granted on it is granted on the new one (_find_blobs_sql likewise).
CREATE TEMP TABLE _memmie_old_acl ON COMMIT DROP AS
SELECT p.proname::pg_catalog.text AS name, p.proacl AS acl FROM pg_catalog.pg_proc p
WHERE p.oid OPERATOR(pg_catalog.=) ANY (ARRAY[
    'memmie.find_blobs(uuid,text[],text,uuid,jsonb,text,boolean,uuid,integer)'::pg_catalog.regprocedure,
    'memmie._find_blobs_sql(boolean,boolean,boolean,boolean,boolean,boolean,boolean)'::pg_catalog.regprocedure]);
DROP FUNCTION memmie.find_blobs(uuid, text[], text, uuid, jsonb, text, boolean, uuid, integer);
DROP FUNCTION memmie._find_blobs_sql(boolean, boolean, boolean, boolean, boolean, boolean, boolean);

CREATE FUNCTION memmie._find_blobs_sql(has_tags boolean, has_created_by boolean, has_parent boolean,
                                       has_metadata boolean, has_text boolean, include_deleted boolean,
                                       has_page_after boolean, content_kind text DEFAULT NULL,
                                       roots_only boolean DEFAULT false,
                                       order_by text DEFAULT 'created_at') RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT 'SELECT b.* FROM memmie.blobs b WHERE b.user_id = $1'
        || CASE WHEN include_deleted THEN '' ELSE ' AND b.deleted_at IS NULL' END
        || CASE WHEN has_tags THEN ' AND b.tags @> $2' ELSE '' END
        || CASE WHEN has_created_by THEN ' AND b.created_by = $3' ELSE '' END
        || CASE WHEN has_parent THEN ' AND b.parent_blob_id = $4' ELSE '' END
        || CASE WHEN has_metadata THEN ' AND b.metadata @> $5' ELSE '' END
        || CASE WHEN has_text
                THEN ' AND to_tsvector(''english''::regconfig, coalesce(b.metadata ->> ''title'', '''')'
                     || ' || '' '' || coalesce(b.metadata ->> ''description'', ''''))'
                     || ' @@ websearch_to_tsquery(''english''::regconfig, $6)'
                ELSE '' END
        || CASE content_kind
                WHEN 'type' THEN ' AND lower(split_part(b.content_type, ''/'', 1)) = $10'
                WHEN 'exact' THEN ' AND lower(btrim(split_part(b.content_type, '';'', 1))) = $10'
                ELSE '' END
        || CASE WHEN roots_only
                THEN ' AND NOT EXISTS (SELECT FROM memmie.blob_edges e WHERE e.child_blob_id = b.id)'
                ELSE '' END
        || CASE WHEN has_page_after THEN format(' AND (b.%I, b.id) < ($7, $8)', order_by) ELSE '' END
        || format(' ORDER BY b.%I DESC, b.id DESC LIMIT $9', order_by)
$$;
REVOKE ALL ON FUNCTION memmie._find_blobs_sql(boolean,boolean,boolean,boolean,boolean,boolean,boolean,text,boolean,text) FROM PUBLIC;

CREATE FUNCTION memmie.find_blobs(user_id uuid, tags text[] DEFAULT NULL, created_by text DEFAULT NULL,
                                  parent_blob_id uuid DEFAULT NULL, metadata_contains jsonb DEFAULT NULL,
                                  text_query text DEFAULT NULL, include_deleted boolean DEFAULT false,
                                  page_after uuid DEFAULT NULL, max_rows int DEFAULT 50,
                                  content_type text DEFAULT NULL, roots_only boolean DEFAULT false,
                                  order_by text DEFAULT 'created_at',
                                  page_after_at timestamptz DEFAULT NULL)
RETURNS SETOF memmie.blobs
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    after_at timestamptz := find_blobs.page_after_at;
    kind     text;
    pattern  text;
BEGIN
    PERFORM memmie._require(find_blobs.user_id, 'user_id');
    IF find_blobs.max_rows IS NULL OR find_blobs.max_rows < 1 OR find_blobs.max_rows > 10000 THEN
        RAISE EXCEPTION 'max_rows must be between 1 and 10000, got %', find_blobs.max_rows
            USING ERRCODE = '22023';
    END IF;
    IF find_blobs.metadata_contains IS NOT NULL AND jsonb_typeof(find_blobs.metadata_contains) <> 'object' THEN
        RAISE EXCEPTION 'metadata_contains must be a JSON object, got %', jsonb_typeof(find_blobs.metadata_contains)
            USING ERRCODE = '22023';
    END IF;
    IF array_position(find_blobs.tags, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'tags must not contain NULL' USING ERRCODE = '22023';
    END IF;
    IF find_blobs.order_by IS NULL OR find_blobs.order_by NOT IN ('created_at', 'updated_at') THEN
        RAISE EXCEPTION 'invalid order_by "%": expected created_at or updated_at', find_blobs.order_by
            USING ERRCODE = '22023';
    END IF;
    PERFORM memmie._require(find_blobs.roots_only, 'roots_only');
    IF find_blobs.content_type IS NOT NULL THEN
        -- type/subtype (parameters ignored), type/* or */*, as in a provider's supported_types
        PERFORM memmie._check_mime_pattern(find_blobs.content_type);
        IF find_blobs.content_type LIKE '%/*' THEN
            kind := CASE WHEN find_blobs.content_type <> '*/*' THEN 'type' END;
            pattern := lower(left(find_blobs.content_type, -2));
        ELSE
            kind := 'exact';
            pattern := lower(btrim(split_part(find_blobs.content_type, ';', 1)));
        END IF;
    END IF;
    IF find_blobs.page_after_at IS NOT NULL AND find_blobs.page_after IS NULL THEN
        RAISE EXCEPTION 'page_after_at needs page_after (the id of the row whose % it is)', find_blobs.order_by
            USING ERRCODE = '22023';
    END IF;
    IF find_blobs.page_after IS NOT NULL AND after_at IS NULL THEN
        -- the cursor's sort value read from its row, which must still exist (with page_after_at
        -- the row is not needed)
        EXECUTE format('SELECT x.%I FROM memmie.blobs x WHERE x.id = $1 AND x.user_id = $2', find_blobs.order_by)
            INTO after_at USING find_blobs.page_after, find_blobs.user_id;
        IF after_at IS NULL THEN
            RAISE EXCEPTION 'page_after blob % does not exist', find_blobs.page_after USING ERRCODE = 'P0002',
                HINT = format('pass page_after_at (the %s of the last row) too: then the cursor does not need the row',
                              find_blobs.order_by);
        END IF;
    END IF;
    RETURN QUERY EXECUTE memmie._find_blobs_sql(
            find_blobs.tags IS NOT NULL, find_blobs.created_by IS NOT NULL,
            find_blobs.parent_blob_id IS NOT NULL, find_blobs.metadata_contains IS NOT NULL,
            find_blobs.text_query IS NOT NULL, coalesce(find_blobs.include_deleted, false),
            find_blobs.page_after IS NOT NULL, kind, find_blobs.roots_only, find_blobs.order_by)
        USING find_blobs.user_id, find_blobs.tags, find_blobs.created_by::varchar, find_blobs.parent_blob_id,
              find_blobs.metadata_contains, find_blobs.text_query, after_at, find_blobs.page_after,
              find_blobs.max_rows, pattern;
END
$$;
REVOKE ALL ON FUNCTION memmie.find_blobs(uuid,text[],text,uuid,jsonb,text,boolean,uuid,integer,text,boolean,text,timestamp with time zone) FROM PUBLIC;

DO $$
DECLARE
    g record;
BEGIN
    FOR g IN SELECT o.name, a.grantee, a.privilege_type, a.is_grantable
             FROM pg_temp._memmie_old_acl o, pg_catalog.aclexplode(o.acl) a
             WHERE a.grantee OPERATOR(pg_catalog.<>) a.grantor LOOP
        EXECUTE pg_catalog.format('GRANT %s ON FUNCTION %s TO %s%s', g.privilege_type,
            CASE g.name WHEN 'find_blobs' THEN 'memmie.find_blobs(uuid,text[],text,uuid,jsonb,text,boolean,uuid,integer,text,boolean,text,timestamp with time zone)'
                        ELSE 'memmie._find_blobs_sql(boolean,boolean,boolean,boolean,boolean,boolean,boolean,text,boolean,text)' END,
            CASE WHEN g.grantee OPERATOR(pg_catalog.=) 0 THEN 'PUBLIC' ELSE g.grantee::pg_catalog.regrole::pg_catalog.text END,
            CASE WHEN g.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
    END LOOP;
END
$$;
DROP TABLE pg_temp._memmie_old_acl;

-- ---------------------------------------------------------------------------------------------
-- Providers' processing_rules.content_changes_only: dispatch skips a blob.updated that kept the
-- content (_provider_from_definition checks it, delete_blob above does delete_with_parent).
CREATE OR REPLACE FUNCTION memmie.dispatch_events(max_events int DEFAULT 100) RETURNS int
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    n         int;
    blobs     uuid[];
    providers text[];
    metadata  jsonb[];
BEGIN
    IF dispatch_events.max_events IS NULL OR dispatch_events.max_events < 1
       OR dispatch_events.max_events > 100000 THEN
        RAISE EXCEPTION 'max_events must be between 1 and 100000, got %', dispatch_events.max_events
            USING ERRCODE = '22023';
    END IF;
    WITH ev AS MATERIALIZED (
        SELECT e.id, e.created_at, e.event_type, e.aggregate_id, e.aggregate_type, e.payload
        FROM memmie.events e
        WHERE e.processed = false
        ORDER BY e.created_at, e.id
        LIMIT dispatch_events.max_events
        FOR UPDATE SKIP LOCKED
    ), marked AS (
        UPDATE memmie.events e SET processed = true, processed_at = clock_timestamp()
        FROM ev WHERE e.id = ev.id AND e.created_at = ev.created_at
        RETURNING 1
    ), matched AS (
        SELECT DISTINCT ON (b.id, p.id) b.id AS blob_id, p.id AS provider_id,
               jsonb_build_object('event_id', ev.id, 'event_type', ev.event_type) AS metadata
        FROM ev
        JOIN memmie.blobs b ON ev.aggregate_type = 'blob' AND b.id = ev.aggregate_id
        JOIN memmie.blob_versions v ON v.blob_id = b.id
             AND v.version = (ev.payload ->> 'version')::int
        JOIN memmie.providers p ON ev.event_type = ANY (p.trigger_events)
        LEFT JOIN memmie.blob_versions pv ON pv.blob_id = b.id AND pv.version = v.version - 1
        WHERE memmie._matches(p, b, v)
          -- a provider with processing_rules.content_changes_only skips a blob.updated that kept
          -- the content (a tag or metadata edit)
          AND NOT (ev.event_type = 'blob.updated'
                   AND (p.processing_rules ->> 'content_changes_only')::boolean IS TRUE
                   AND pv.content_hash IS NOT DISTINCT FROM v.content_hash AND pv.version IS NOT NULL)
        ORDER BY b.id, p.id, ev.created_at
    )
    SELECT (SELECT count(*) FROM marked), array_agg(m.blob_id), array_agg(m.provider_id), array_agg(m.metadata)
    INTO n, blobs, providers, metadata
    FROM matched m;
    PERFORM memmie._queue_processing(blobs, providers, metadata);
    RETURN n;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- The documented grants (README "Privileges") kept: 0.1.0 -> 0.2.0 added functions and tables
-- without them. A role holding EXECUTE on memmie.create_blob gets EXECUTE on every memmie
-- function; a role holding privileges on memmie.blobs gets the same on every memmie table.
DO $$
DECLARE
    g record;
BEGIN
    FOR g IN
        SELECT DISTINCT a.grantee::pg_catalog.regrole AS role
        FROM pg_catalog.pg_proc p, pg_catalog.aclexplode(p.proacl) a
        WHERE p.pronamespace OPERATOR(pg_catalog.=) 'memmie'::pg_catalog.regnamespace
          AND p.proname OPERATOR(pg_catalog.=) 'create_blob'
          AND a.privilege_type OPERATOR(pg_catalog.=) 'EXECUTE'
          AND a.grantee OPERATOR(pg_catalog.<>) 0 AND a.grantee OPERATOR(pg_catalog.<>) p.proowner
    LOOP
        EXECUTE pg_catalog.format('GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA memmie TO %s', g.role);
    END LOOP;
    FOR g IN
        SELECT a.grantee::pg_catalog.regrole AS role, pg_catalog.string_agg(a.privilege_type, ', ') AS privileges
        FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a
        WHERE c.oid OPERATOR(pg_catalog.=) 'memmie.blobs'::pg_catalog.regclass
          AND a.grantee OPERATOR(pg_catalog.<>) 0 AND a.grantee OPERATOR(pg_catalog.<>) c.relowner
        GROUP BY a.grantee
    LOOP
        EXECUTE pg_catalog.format('GRANT %s ON ALL TABLES IN SCHEMA memmie TO %s', g.privileges, g.role);
    END LOOP;
END
$$;
