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

-- maintenance() analyzes blob_edges too (and applies quota_limits.keep_versions: the long
-- histories step below).
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
    report := report || jsonb_build_object('versions_squashed', memmie._apply_keep_versions());
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
                                       version_map, user_id)
        VALUES (parent.id, b.id, p_by, p_transform,
                jsonb_build_array(jsonb_build_object('parent_version', parent.version,
                                                     'child_version', 1)), p_user);
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
-- delta that cannot be applied as a row instead of failing. It compares the kept states of
-- blob_snapshots with the replay and starts a squashed history from its base (the long
-- histories step below).
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
                                  v.deleted) AS stored,
               k.state AS snapshot
        FROM memmie.blob_versions v
        FULL JOIN (SELECT x.blob_id, x.to_version, x.patch FROM memmie.deltas x WHERE x.status = 'applied') d
               ON d.blob_id = v.blob_id AND d.to_version = v.version
        LEFT JOIN memmie.blob_snapshots k ON k.blob_id = v.blob_id AND k.version = v.version AND k.user_id = v.user_id
        ORDER BY 1, 2
    LOOP
        IF r.blob_id IS DISTINCT FROM cur THEN
            cur := r.blob_id;
            s := NULL;
            broken := false;
            IF r.version > 1 THEN
                -- a squashed history: it starts from the snapshot of its first version
                blob_id := r.blob_id;
                version := r.version;
                IF r.snapshot IS NULL OR NOT r.has_version THEN
                    problem := 'the history starts after version 1 without a kept state';
                    broken := true;
                    RETURN NEXT;
                    CONTINUE;
                END IF;
                s := r.snapshot;
                IF s IS DISTINCT FROM r.stored THEN
                    problem := NULL;
                    RETURN NEXT;
                END IF;
                CONTINUE;
            END IF;
        END IF;
        CONTINUE WHEN broken;
        IF r.patch IS NOT NULL THEN
            BEGIN
                -- replay's own engine and limits, as blob_state uses them (a state may nest 128
                -- levels, its patch two more: more than jsonb_patch reads), from the state so far
                s := CASE WHEN s IS NULL THEN memmie._replay(ARRAY[r.patch::pg_catalog.text])::pg_catalog.jsonb
                          ELSE memmie._replay_from(s, ARRAY[r.patch::pg_catalog.text]) END;
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
        ELSIF r.snapshot IS NOT NULL AND s IS DISTINCT FROM r.snapshot THEN
            blob_id := r.blob_id;
            version := r.version;
            problem := 'its kept state (blob_snapshots) is not the replayed one';
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
             OR (SELECT count(*) + min(w.version) - 1 FROM memmie.blob_versions w WHERE w.blob_id = b.id)
                <> b.version) x;
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

    -- edges join blobs of one user, the edge's; every parent_blob_id has its edge (the joins are
    -- on user_id, so that on a Citus cluster they stay within each user's shards)
    SELECT count(*), string_agg(x.what, '; ') FILTER (WHERE x.rn <= 3)
    INTO bad, sample
    FROM (SELECT y.what, row_number() OVER (ORDER BY y.what) AS rn FROM (
              SELECT format('edge %s -> %s crosses users', e.parent_blob_id, e.child_blob_id) AS what
              FROM memmie.blob_edges e
              LEFT JOIN memmie.blobs p ON p.id = e.parent_blob_id AND p.user_id = e.user_id
              LEFT JOIN memmie.blobs c ON c.id = e.child_blob_id AND c.user_id = e.user_id
              WHERE p.id IS NULL OR c.id IS NULL
              UNION ALL
              SELECT format('blob %s has parent %s without an edge', b.id, b.parent_blob_id)
              FROM memmie.blobs b
              WHERE b.parent_blob_id IS NOT NULL
                AND NOT EXISTS (SELECT FROM memmie.blob_edges e
                                WHERE e.parent_blob_id = b.parent_blob_id AND e.child_blob_id = b.id
                                  AND e.user_id = b.user_id)) y) x;
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
-- is dropped and whatever was granted on it is granted on the new one (the grants are kept in
-- a transaction-local setting, not a temporary table: on a Citus cluster ALTER EXTENSION runs on
-- every node in one two-phase transaction, and a transaction that used a temporary table cannot
-- PREPARE).
SELECT pg_catalog.set_config('memmie.upgrade_acl', coalesce((
    SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('name', p.proname, 'acl', p.proacl))::pg_catalog.text
    FROM pg_catalog.pg_proc p
    WHERE p.oid OPERATOR(pg_catalog.=) ANY (ARRAY['memmie.delete_blob(uuid,boolean)'::pg_catalog.regprocedure,
                                                'memmie.revert_blob(uuid,integer,text)'::pg_catalog.regprocedure])), '[]'), true);
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
    b := memmie._lock_blob(revert_blob.blob_id, memmie._scope());
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
    b := memmie._lock_blob(delete_blob.blob_id, memmie._scope());
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
            JOIN memmie.blobs c ON c.id = e.child_blob_id AND c.user_id = e.user_id
            WHERE e.parent_blob_id = b.id AND e.user_id = b.user_id AND c.deleted_at IS NULL
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
    b     memmie.blobs := memmie._lock_blob(undelete_blob.blob_id, memmie._scope());
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
             FROM pg_catalog.jsonb_to_recordset(pg_catalog.current_setting('memmie.upgrade_acl')::pg_catalog.jsonb)
                      AS o (name pg_catalog.text, acl pg_catalog.aclitem[]),
                  pg_catalog.aclexplode(o.acl) a
             WHERE a.grantee OPERATOR(pg_catalog.<>) a.grantor LOOP
        EXECUTE pg_catalog.format('GRANT %s ON FUNCTION %s TO %s%s', g.privilege_type,
            CASE g.name WHEN 'delete_blob' THEN 'memmie.delete_blob(uuid,boolean,integer)'
                        ELSE 'memmie.revert_blob(uuid,integer,text,integer)' END,
            CASE WHEN g.grantee OPERATOR(pg_catalog.=) 0 THEN 'PUBLIC' ELSE g.grantee::pg_catalog.regrole::pg_catalog.text END,
            CASE WHEN g.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
    END LOOP;
END
$$;

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
    known   text[] := '{keep_versions,max_blobs,max_content_size,max_storage_bytes}';
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
    known pg_catalog.text[] := '{keep_versions,max_blobs,max_content_size,max_storage_bytes}';
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
        AND (quota_limits OPERATOR(pg_catalog.-) '{keep_versions,max_blobs,max_content_size,max_storage_bytes}'::pg_catalog.text[])
            OPERATOR(pg_catalog.=) '{}'::pg_catalog.jsonb);

-- ---------------------------------------------------------------------------------------------
-- find_blobs() takes content_type (a MIME pattern), roots_only, order_by and page_after_at (the
-- cursor's sort value: the page_after row need not exist any more), last and defaulted so that
-- existing calls keep working. A new signature is a new function: the old one is dropped and
-- whatever was granted on it is granted on the new one (_find_blobs_sql likewise).
SELECT pg_catalog.set_config('memmie.upgrade_acl', coalesce((
    SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('name', p.proname, 'acl', p.proacl))::pg_catalog.text
    FROM pg_catalog.pg_proc p
    WHERE p.oid OPERATOR(pg_catalog.=) ANY (ARRAY[
        'memmie.find_blobs(uuid,text[],text,uuid,jsonb,text,boolean,uuid,integer)'::pg_catalog.regprocedure,
        'memmie._find_blobs_sql(boolean,boolean,boolean,boolean,boolean,boolean,boolean)'::pg_catalog.regprocedure])), '[]'), true);
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
                THEN ' AND NOT EXISTS (SELECT FROM memmie.blob_edges e WHERE e.child_blob_id = b.id AND e.user_id = b.user_id)'
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
             FROM pg_catalog.jsonb_to_recordset(pg_catalog.current_setting('memmie.upgrade_acl')::pg_catalog.jsonb)
                      AS o (name pg_catalog.text, acl pg_catalog.aclitem[]),
                  pg_catalog.aclexplode(o.acl) a
             WHERE a.grantee OPERATOR(pg_catalog.<>) a.grantor LOOP
        EXECUTE pg_catalog.format('GRANT %s ON FUNCTION %s TO %s%s', g.privilege_type,
            CASE g.name WHEN 'find_blobs' THEN 'memmie.find_blobs(uuid,text[],text,uuid,jsonb,text,boolean,uuid,integer,text,boolean,text,timestamp with time zone)'
                        ELSE 'memmie._find_blobs_sql(boolean,boolean,boolean,boolean,boolean,boolean,boolean,text,boolean,text)' END,
            CASE WHEN g.grantee OPERATOR(pg_catalog.=) 0 THEN 'PUBLIC' ELSE g.grantee::pg_catalog.regrole::pg_catalog.text END,
            CASE WHEN g.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
    END LOOP;
END
$$;

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
-- Access levels and tenant isolation (sql/access.sql, README "Privileges"): grant_app,
-- grant_worker, grant_admin, revoke_access; the session's user (memmie.user_id); every function
-- that reads or changes users' data runs as the owner and checks whose data the call may touch;
-- row-level security on the tenant tables.
CREATE FUNCTION memmie."_bound_user"() RETURNS uuid
STRICT STABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'bound_user_wrapper';
CREATE FUNCTION memmie."_caller"() RETURNS oid
STRICT STABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'caller_wrapper';
CREATE FUNCTION memmie."_content"("content_hash" TEXT) RETURNS bytea
STRICT STABLE PARALLEL SAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'content_unchecked_wrapper';

CREATE TABLE memmie.grantees (
    role_name  name NOT NULL,
    level      text NOT NULL CHECK (level IN ('app', 'worker', 'admin')),
    granted_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (role_name, level)
);
SELECT pg_catalog.pg_extension_config_dump('memmie.grantees', '');

-- ---------------------------------------------------------------------------------------------
-- Who is calling

-- Whether the caller sees every user's rows: a superuser, the extension's owner or a member of
-- its role, or a role holding the admin level (directly or as a member). SECURITY DEFINER: the
-- row-level security policies call it as the querying role, which cannot read grantees.
CREATE FUNCTION memmie._unrestricted() RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT FROM pg_catalog.pg_extension e
                   WHERE e.extname = 'memmie'
                     AND pg_catalog.pg_has_role(memmie._caller(), e.extowner, 'USAGE'))
        OR EXISTS (SELECT FROM memmie.grantees g
                   JOIN pg_catalog.pg_roles r ON r.rolname = g.role_name
                   WHERE g.level = 'admin'
                     AND pg_catalog.pg_has_role(memmie._caller(), r.oid, 'USAGE'))
$$;

-- The user a call is confined to: the bound user; NULL when the caller sees every user (no user
-- bound, and _unrestricted). 42501 when no user is bound and the caller may not see all.
CREATE FUNCTION memmie._scope() RETURNS uuid
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    bound uuid := memmie._bound_user();
BEGIN
    IF bound IS NOT NULL THEN
        RETURN bound;
    END IF;
    IF memmie._unrestricted() THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'no user bound: memmie.user_id is not set'
        USING ERRCODE = '42501',
              HINT = 'Set the user this session acts for: SET memmie.user_id = ''<uuid>'', or set_config(''memmie.user_id'', $1, true) per transaction.';
END
$$;

-- The user a call with a user_id argument acts for: p_user when the caller may act for it (the
-- bound user, or anyone for an unrestricted caller with no user bound); NULL means the bound
-- user. 42501 for another user than the bound one; 22023 for NULL with no user bound.
CREATE FUNCTION memmie._acting_user(p_user uuid) RETURNS uuid
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    scope uuid := memmie._scope();
BEGIN
    IF scope IS NULL THEN
        RETURN memmie._require(p_user, 'user_id');
    END IF;
    IF p_user IS NOT NULL AND p_user <> scope THEN
        RAISE EXCEPTION 'this session acts for user %, not for user %', scope, p_user
            USING ERRCODE = '42501', HINT = 'memmie.user_id names the user a session acts for.';
    END IF;
    RETURN scope;
END
$$;

-- The blob, when this call may see it; P0002 as for a blob that does not exist otherwise.
CREATE FUNCTION memmie._visible_blob(p_blob uuid) RETURNS memmie.blobs
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    scope uuid := memmie._scope();
    b     memmie.blobs;
BEGIN
    PERFORM memmie._require(p_blob, 'blob_id');
    SELECT * INTO b FROM memmie.blobs x WHERE x.id = p_blob AND (scope IS NULL OR x.user_id = scope);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'blob % does not exist', p_blob USING ERRCODE = 'P0002';
    END IF;
    RETURN b;
END
$$;

-- P0002 unless this call may read content p_hash: the bound user references it.
CREATE FUNCTION memmie._check_content_visible(p_hash text) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    scope uuid := memmie._scope();
BEGIN
    IF scope IS NOT NULL AND NOT EXISTS (SELECT FROM memmie.user_content_refs r
                                         WHERE r.user_id = scope AND r.content_hash = p_hash) THEN
        RAISE EXCEPTION 'content % does not exist', p_hash USING ERRCODE = 'P0002';
    END IF;
END
$$;

-- The user this session acts for (memmie.user_id), NULL when none: for the application's own
-- queries and policies, as Supabase's auth.uid().
CREATE FUNCTION memmie.current_user_id() RETURNS uuid
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT memmie._bound_user()
$$;

-- ---------------------------------------------------------------------------------------------
-- The levels: which functions and tables each one gets. Functions are named (every overload of
-- a name gets the level); a function in no list is the owner's alone. Every level gets the
-- functions the row-level security policies call (they run as the querying role) and the two
-- that say who the caller is.

CREATE FUNCTION memmie._level_function_names(p_level text) RETURNS text[]
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT ARRAY['current_user_id', 'access_levels', '_bound_user', '_unrestricted', '_caller']
        || CASE p_level
        WHEN 'app' THEN ARRAY[
            'create_blob', 'create_external_blob', 'apply_delta', 'update_content',
            'update_external_content', 'revert_blob', 'delete_blob', 'undelete_blob', 'squash_history',
            'blob_state', 'blob_content', 'blob_history', 'find_blobs', 'get_content',
            'derive_blob', 'add_edge', 'ancestors', 'descendants', 'lineage', 'dag_stats',
            'user_usage', 'enqueue_job', 'cancel_job', 'record_api_call']
        WHEN 'worker' THEN ARRAY[
            'events_since', 'dispatch_events', 'claim_jobs', 'heartbeat_job', 'complete_job',
            'fail_job', 'complete_processing', 'fail_processing', 'processing_input',
            'pending_work']
        WHEN 'admin' THEN ARRAY[
            'register_provider', 'set_provider_status', 'backfill', 'reprocess',
            'maintenance', 'check', 'gc_content', 'put_content', 'verify_content',
            'create_partitions', 'drop_old_partitions', 'ensure_partitions', 'fold_usage',
            'rollup_metrics', 'refresh_views', 'refresh_user_blob_summary',
            'schedule_maintenance', 'unschedule_maintenance', 'user_usage', 'cancel_job',
            'set_quota', 'distribute']
        END
$$;

-- The tables a level may SELECT (row-level security decides which rows).
CREATE FUNCTION memmie._level_table_names(p_level text) RETURNS text[]
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE p_level
        WHEN 'app' THEN ARRAY[
            'user_contexts', 'content_storage', 'blobs', 'blob_versions', 'user_content_refs',
            'deltas', 'blob_edges', 'provider_processing', 'events', 'jobs', 'usage_metrics']
        WHEN 'worker' THEN ARRAY['providers', 'provider_versions']
        WHEN 'admin' THEN ARRAY[
            'user_contexts', 'content_storage', 'blobs', 'blob_versions', 'user_content_refs',
            'deltas', 'blob_edges', 'providers', 'provider_versions', 'provider_processing',
            'events', 'jobs', 'usage_metrics', 'usage_increments', 'provider_metrics',
            'user_blob_summary', 'dag_statistics', 'grantees', 'blob_snapshots']
        END
$$;

-- Grants role p_role what its recorded levels give (schema usage, EXECUTE, SELECT).
CREATE FUNCTION memmie._apply_grants(p_role name) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    lvl text;
    f   regprocedure;
    t   text;
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA memmie TO %I', p_role);
    FOR lvl IN SELECT g.level FROM memmie.grantees g WHERE g.role_name = p_role LOOP
        FOR f IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
                 WHERE p.pronamespace = 'memmie'::regnamespace
                   AND p.proname = ANY (memmie._level_function_names(lvl)) LOOP
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', f, p_role);
        END LOOP;
        FOREACH t IN ARRAY memmie._level_table_names(lvl) LOOP
            EXECUTE format('GRANT SELECT ON TABLE memmie.%I TO %I', t, p_role);
        END LOOP;
    END LOOP;
END
$$;

-- Every recorded grantee's grants again (each upgrade script ends with it; a role dropped since
-- is skipped, its rows kept until revoke_access or a new role of that name).
CREATE FUNCTION memmie._reapply_grants() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r name;
BEGIN
    FOR r IN SELECT DISTINCT g.role_name FROM memmie.grantees g
             JOIN pg_catalog.pg_roles x ON x.rolname = g.role_name LOOP
        PERFORM memmie._apply_grants(r);
    END LOOP;
END
$$;

-- The name of role p_role (22023 for NULL; 42704 for a role dropped since the regrole was made).
CREATE FUNCTION memmie._role_name(p_role regrole) RETURNS name
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n name;
BEGIN
    PERFORM memmie._require(p_role, 'role');
    SELECT r.rolname INTO n FROM pg_catalog.pg_roles r WHERE r.oid = p_role;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'role % does not exist', p_role USING ERRCODE = '42704';
    END IF;
    RETURN n;
END
$$;

CREATE FUNCTION memmie._grant_level(p_role regrole, p_level text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n name := memmie._role_name(p_role);
BEGIN
    INSERT INTO memmie.grantees (role_name, level) VALUES (n, p_level) ON CONFLICT DO NOTHING;
    PERFORM memmie._apply_grants(n);
END
$$;

CREATE FUNCTION memmie.grant_app(role regrole) RETURNS void
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT memmie._grant_level(role, 'app')
$$;

CREATE FUNCTION memmie.grant_worker(role regrole) RETURNS void
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT memmie._grant_level(role, 'worker')
$$;

CREATE FUNCTION memmie.grant_admin(role regrole) RETURNS void
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT memmie._grant_level(role, 'admin')
$$;

-- Every level of the role, and every privilege it holds on memmie's objects.
CREATE FUNCTION memmie.revoke_access(role regrole) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n name := memmie._role_name(revoke_access.role);
BEGIN
    DELETE FROM memmie.grantees g WHERE g.role_name = n;
    EXECUTE format('REVOKE ALL ON ALL FUNCTIONS IN SCHEMA memmie FROM %I', n);
    EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA memmie FROM %I', n);
    EXECUTE format('REVOKE ALL ON ALL SEQUENCES IN SCHEMA memmie FROM %I', n);
    EXECUTE format('REVOKE ALL ON SCHEMA memmie FROM %I', n);
END
$$;

-- The levels a role holds (for the caller when role is NULL).
CREATE FUNCTION memmie.access_levels(role regrole DEFAULT NULL)
RETURNS TABLE (role_name name, level text, granted_at timestamptz)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT g.role_name, g.level, g.granted_at FROM memmie.grantees g
    JOIN pg_catalog.pg_roles r ON r.rolname = g.role_name
    WHERE r.oid = coalesce($1, memmie._caller()::regrole)
    ORDER BY g.level
$$;

-- ---------------------------------------------------------------------------------------------
-- Row-level security: what SELECT shows a level's roles. The bound user's rows; every row for
-- an unrestricted caller (admin level). The owner bypasses these (memmie's functions run as the
-- owner); no policy allows a write, and no level may write. Each call is evaluated once per
-- query (the scalar subqueries), not per row.

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['user_contexts', 'blobs', 'blob_versions', 'user_content_refs',
                             'deltas', 'provider_processing', 'events', 'jobs', 'usage_metrics',
                             'usage_increments'] LOOP
        EXECUTE format('ALTER TABLE memmie.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format($p$CREATE POLICY tenant_read ON memmie.%I FOR SELECT
                          USING (user_id OPERATOR(pg_catalog.=) (SELECT memmie._bound_user()) OR (SELECT memmie._unrestricted()))$p$, t);
    END LOOP;
END
$$;

-- Edges never cross users: an edge is visible with its parent blob.
ALTER TABLE memmie.blob_edges ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_read ON memmie.blob_edges FOR SELECT
    USING ((SELECT memmie._unrestricted())
           OR EXISTS (SELECT FROM memmie.blobs b
                      WHERE b.id OPERATOR(pg_catalog.=) blob_edges.parent_blob_id
                        AND b.user_id OPERATOR(pg_catalog.=) (SELECT memmie._bound_user())));

-- A content is visible to the users that reference it (dedup across users stays invisible).
ALTER TABLE memmie.content_storage ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_read ON memmie.content_storage FOR SELECT
    USING ((SELECT memmie._unrestricted())
           OR EXISTS (SELECT FROM memmie.user_content_refs r
                      WHERE r.content_hash OPERATOR(pg_catalog.=) content_storage.content_hash
                        AND r.user_id OPERATOR(pg_catalog.=) (SELECT memmie._bound_user())));


-- The blob lock, the delta check and _derive take the scope a call is confined to.
DROP FUNCTION memmie._lock_blob(uuid);
DROP FUNCTION memmie._check_delta_exists(uuid);
DROP FUNCTION memmie._derive(uuid[], text, text, bytea, text, jsonb, text[], uuid, jsonb);

CREATE FUNCTION memmie._check_delta_exists(p_delta uuid, p_scope uuid) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF p_delta IS NOT NULL THEN
        PERFORM FROM memmie.deltas x WHERE x.id = p_delta AND (p_scope IS NULL OR x.user_id = p_scope);
        IF NOT FOUND THEN
            RAISE EXCEPTION 'delta % does not exist', p_delta USING ERRCODE = 'P0002';
        END IF;
    END IF;
END
$$;

CREATE FUNCTION memmie._lock_blob(p_blob uuid, p_scope uuid) RETURNS memmie.blobs
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    b memmie.blobs;
BEGIN
    PERFORM memmie._require(p_blob, 'blob_id');
    SELECT * INTO b FROM memmie.blobs WHERE id = p_blob AND (p_scope IS NULL OR user_id = p_scope);
    IF FOUND THEN
        PERFORM memmie._lock_user(b.user_id);
        SELECT * INTO b FROM memmie.blobs WHERE id = p_blob FOR NO KEY UPDATE;
    END IF;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'blob % does not exist', p_blob USING ERRCODE = 'P0002';
    END IF;
    RETURN b;
END
$$;

CREATE FUNCTION memmie._derive(p_parents uuid[], p_by text, p_transform text, p_content bytea,
                               p_type text, p_meta jsonb, p_tags text[], p_caused_by uuid,
                               p_caused_event jsonb, p_scope uuid)
RETURNS memmie.blobs
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    first   memmie.blobs;
    parent  memmie.blobs;
    b       memmie.blobs;
    p_user  uuid;
BEGIN
    PERFORM memmie._check_provider(p_by);
    PERFORM memmie._check_text(p_transform, 'transform_type', 255);
    IF p_parents IS NULL OR cardinality(p_parents) = 0 THEN
        RAISE EXCEPTION 'parent_blob_ids must name at least one blob' USING ERRCODE = '22023';
    END IF;
    IF array_position(p_parents, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'parent_blob_ids must not contain NULL' USING ERRCODE = '22023';
    END IF;
    IF (SELECT count(DISTINCT x) FROM unnest(p_parents) x) <> cardinality(p_parents) THEN
        RAISE EXCEPTION 'parent_blob_ids must not repeat a blob' USING ERRCODE = '22023';
    END IF;
    SELECT x.user_id INTO p_user FROM memmie.blobs x
    WHERE x.id = p_parents[1] AND (p_scope IS NULL OR x.user_id = p_scope);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'parent blob % does not exist', p_parents[1] USING ERRCODE = 'P0002';
    END IF;
    PERFORM memmie._lock_user_dag(p_user);
    first := memmie._live_parent(p_parents[1], p_user);
    FOR i IN 2 .. cardinality(p_parents) LOOP
        PERFORM memmie._live_parent(p_parents[i], p_user);
    END LOOP;
    PERFORM memmie._check_delta_exists(p_caused_by, p_user);
    b := memmie._insert_blob(p_user, p_content, p_type, coalesce(p_meta, '{}'), coalesce(p_tags, '{}'),
                             first, p_by, 'transform', p_transform,
                             coalesce(p_caused_by, memmie._head_delta(first)), p_caused_event);
    FOR i IN 2 .. cardinality(p_parents) LOOP
        SELECT * INTO parent FROM memmie.blobs x WHERE x.id = p_parents[i] AND x.user_id = p_user;
        INSERT INTO memmie.blob_edges (parent_blob_id, child_blob_id, provider_id, transform_type,
                                       version_map, user_id)
        VALUES (parent.id, b.id, p_by, p_transform,
                jsonb_build_array(jsonb_build_object('parent_version', parent.version,
                                                     'child_version', 1)), p_user);
    END LOOP;
    RETURN b;
END
$$;

-- Each user-level function acts for the bound user only.

CREATE OR REPLACE FUNCTION memmie.create_blob(user_id uuid, content bytea, content_type text,
                                   metadata jsonb DEFAULT '{}', tags text[] DEFAULT '{}',
                                   parent_blob_id uuid DEFAULT NULL, created_by text DEFAULT 'user')
RETURNS memmie.blobs
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    p_user uuid := memmie._acting_user(create_blob.user_id);
    p_by   text := memmie._check_provider(create_blob.created_by);
    parent memmie.blobs;
BEGIN
    PERFORM memmie._require(create_blob.content_type, 'content_type');
    PERFORM memmie._check_mime(create_blob.content_type);
    PERFORM memmie._lock_user(p_user);
    IF create_blob.parent_blob_id IS NOT NULL THEN
        parent := memmie._live_parent(create_blob.parent_blob_id, p_user);
    END IF;
    RETURN memmie._insert_blob(p_user, create_blob.content, create_blob.content_type,
                               create_blob.metadata, create_blob.tags, parent, p_by, 'create',
                               'derived');
END
$$;

CREATE OR REPLACE FUNCTION memmie.apply_delta(blob_id uuid, patch jsonb, expected_version int DEFAULT NULL,
                                   provider_id text DEFAULT 'user',
                                   caused_by_delta_id uuid DEFAULT NULL,
                                   caused_by_event jsonb DEFAULT NULL)
RETURNS memmie.deltas
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    p_patch  jsonb := memmie._require(apply_delta.patch, 'patch');
    p_by     text  := memmie._check_provider(apply_delta.provider_id);
    b        memmie.blobs;
BEGIN
    b := memmie._lock_blob(apply_delta.blob_id, memmie._scope());
    PERFORM memmie._check_live(b);
    PERFORM memmie._check_expected(b, apply_delta.expected_version);
    PERFORM memmie._check_delta_exists(apply_delta.caused_by_delta_id, memmie._scope());
    RETURN memmie._apply_patch(b, p_patch, p_by, apply_delta.caused_by_delta_id,
                               apply_delta.caused_by_event);
END
$$;

CREATE OR REPLACE FUNCTION memmie.update_content(blob_id uuid, content bytea, content_type text DEFAULT NULL,
                                      expected_version int DEFAULT NULL,
                                      provider_id text DEFAULT 'user')
RETURNS memmie.blobs
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    p_by  text := memmie._check_provider(update_content.provider_id);
    b     memmie.blobs;
BEGIN
    PERFORM memmie._require(update_content.content, 'content');
    IF update_content.content_type IS NOT NULL THEN
        PERFORM memmie._check_mime(update_content.content_type);
    END IF;
    b := memmie._lock_blob(update_content.blob_id, memmie._scope());
    PERFORM memmie._check_live(b);
    PERFORM memmie._check_expected(b, update_content.expected_version);
    RETURN memmie._replace_content(b, update_content.content, update_content.content_type, p_by);
END
$$;

CREATE OR REPLACE FUNCTION memmie.blob_content(blob_id uuid, version int DEFAULT NULL) RETURNS bytea
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    h text;
BEGIN
    PERFORM memmie._visible_blob(blob_content.blob_id);
    SELECT v.content_hash INTO h
    FROM memmie.blob_versions v JOIN memmie.blobs b ON b.id = v.blob_id
    WHERE v.blob_id = blob_content.blob_id
      AND v.version = coalesce(blob_content.version, b.version);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'blob % has no version %', blob_content.blob_id,
            coalesce(blob_content.version::text, '(latest)') USING ERRCODE = 'P0002';
    END IF;
    RETURN memmie.get_content(h);
END
$$;

CREATE OR REPLACE FUNCTION memmie.blob_history(blob_id uuid) RETURNS SETOF memmie.deltas
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    PERFORM memmie._visible_blob(blob_history.blob_id);
    RETURN QUERY SELECT * FROM memmie.deltas d WHERE d.blob_id = blob_history.blob_id
                 ORDER BY d.to_version, d.created_at;
END
$$;

CREATE OR REPLACE FUNCTION memmie.find_blobs(user_id uuid, tags text[] DEFAULT NULL, created_by text DEFAULT NULL,
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
    PERFORM memmie._acting_user(find_blobs.user_id);
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

CREATE OR REPLACE FUNCTION memmie.derive_blob(parent_blob_ids uuid[], provider_id text, transform_type text,
                                   content bytea, content_type text, metadata jsonb DEFAULT '{}',
                                   tags text[] DEFAULT '{}', caused_by_delta_id uuid DEFAULT NULL)
RETURNS memmie.blobs
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT memmie._derive(parent_blob_ids, provider_id, transform_type, content, content_type,
                          metadata, tags, caused_by_delta_id, NULL, memmie._scope())
$$;

CREATE OR REPLACE FUNCTION memmie.add_edge(parent_blob_id uuid, child_blob_id uuid, provider_id text,
                                transform_type text, metadata jsonb DEFAULT '{}')
RETURNS memmie.blob_edges
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    parent memmie.blobs;
    child  memmie.blobs;
    e      memmie.blob_edges;
BEGIN
    PERFORM memmie._require(add_edge.parent_blob_id, 'parent_blob_id');
    PERFORM memmie._require(add_edge.child_blob_id, 'child_blob_id');
    PERFORM memmie._check_provider(add_edge.provider_id);
    PERFORM memmie._check_text(add_edge.transform_type, 'transform_type', 255);
    IF add_edge.metadata IS NULL OR jsonb_typeof(add_edge.metadata) <> 'object' THEN
        RAISE EXCEPTION 'metadata must be a JSON object, got %', coalesce(jsonb_typeof(add_edge.metadata), 'NULL')
            USING ERRCODE = '22023';
    END IF;
    parent := memmie._visible_blob(add_edge.parent_blob_id);
    PERFORM memmie._lock_user_dag(parent.user_id);
    parent := memmie._live_parent(add_edge.parent_blob_id, parent.user_id);
    -- a blob of another user is not visible here: the same answer as a missing one
    SELECT * INTO child FROM memmie.blobs x
    WHERE x.id = add_edge.child_blob_id AND x.user_id = parent.user_id AND x.deleted_at IS NULL
    FOR SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'blob % does not exist', add_edge.child_blob_id USING ERRCODE = 'P0002';
    END IF;
    IF memmie._would_cycle(parent.id, child.id, parent.user_id) THEN
        RAISE EXCEPTION 'edge % -> % would create a cycle', parent.id, child.id USING ERRCODE = 'MM003',
            DETAIL = format('blob %s already derives from blob %s', parent.id, child.id);
    END IF;
    INSERT INTO memmie.blob_edges (parent_blob_id, child_blob_id, provider_id, transform_type,
                                   metadata, version_map, user_id)
    VALUES (parent.id, child.id, add_edge.provider_id, add_edge.transform_type, add_edge.metadata,
            jsonb_build_array(jsonb_build_object('parent_version', parent.version,
                                                 'child_version', child.version)), parent.user_id)
    ON CONFLICT ON CONSTRAINT unique_edge DO NOTHING
    RETURNING * INTO e;
    IF e.id IS NULL THEN
        -- the same edge exists already: adding it again is a no-op
        SELECT * INTO e FROM memmie.blob_edges x
        WHERE x.parent_blob_id = parent.id AND x.child_blob_id = child.id
          AND x.provider_id = add_edge.provider_id AND x.user_id = parent.user_id;
    END IF;
    RETURN e;
END
$$;

CREATE OR REPLACE FUNCTION memmie.create_external_blob(user_id uuid, content_hash text, content_size bigint,
                                            content_type text, storage_backend text,
                                            storage_path text, metadata jsonb DEFAULT '{}',
                                            tags text[] DEFAULT '{}')
RETURNS memmie.blobs
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    p_user uuid := memmie._acting_user(create_external_blob.user_id);
BEGIN
    PERFORM memmie._require(create_external_blob.content_type, 'content_type');
    PERFORM memmie._check_mime(create_external_blob.content_type);
    PERFORM memmie._lock_user(p_user);
    RETURN memmie._insert_blob(p_user, NULL, create_external_blob.content_type,
                               create_external_blob.metadata, create_external_blob.tags, NULL,
                               'user', 'create', 'derived', NULL, NULL,
                               memmie._external_location(create_external_blob.content_hash,
                                                         create_external_blob.content_size,
                                                         create_external_blob.storage_backend,
                                                         create_external_blob.storage_path));
END
$$;

CREATE OR REPLACE FUNCTION memmie.update_external_content(blob_id uuid, content_hash text, content_size bigint,
                                               storage_backend text, storage_path text,
                                               content_type text DEFAULT NULL,
                                               expected_version int DEFAULT NULL,
                                               provider_id text DEFAULT 'user')
RETURNS memmie.blobs
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    p_by text := memmie._check_provider(update_external_content.provider_id);
    b    memmie.blobs;
BEGIN
    IF update_external_content.content_type IS NOT NULL THEN
        PERFORM memmie._check_mime(update_external_content.content_type);
    END IF;
    b := memmie._lock_blob(update_external_content.blob_id, memmie._scope());
    PERFORM memmie._check_live(b);
    PERFORM memmie._check_expected(b, update_external_content.expected_version);
    RETURN memmie._replace_content(b, NULL, update_external_content.content_type, p_by, NULL, NULL,
                                   NULL, NULL,
                                   memmie._external_location(update_external_content.content_hash,
                                                             update_external_content.content_size,
                                                             update_external_content.storage_backend,
                                                             update_external_content.storage_path));
END
$$;

CREATE OR REPLACE FUNCTION memmie.enqueue_job(job_type text, user_id uuid, input jsonb, max_retries int DEFAULT 3,
                                   expires_at timestamptz DEFAULT NULL, job_id text DEFAULT NULL)
RETURNS memmie.jobs
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    j memmie.jobs;
BEGIN
    PERFORM memmie._check_text(enqueue_job.job_type, 'job_type', 100);
    PERFORM memmie._acting_user(enqueue_job.user_id);
    PERFORM memmie._require(enqueue_job.input, 'input');
    IF enqueue_job.max_retries IS NULL OR enqueue_job.max_retries < 0 THEN
        RAISE EXCEPTION 'max_retries must be 0 or more, got %', enqueue_job.max_retries USING ERRCODE = '22023';
    END IF;
    IF enqueue_job.job_id IS NOT NULL THEN
        PERFORM memmie._check_text(enqueue_job.job_id, 'job_id', 255);
    END IF;
    INSERT INTO memmie.user_contexts (user_id) VALUES (enqueue_job.user_id) ON CONFLICT DO NOTHING;
    INSERT INTO memmie.jobs (id, job_type, user_id, input, max_retries, expires_at)
    VALUES (coalesce(enqueue_job.job_id, gen_random_uuid()::text), enqueue_job.job_type,
            enqueue_job.user_id, enqueue_job.input, enqueue_job.max_retries, enqueue_job.expires_at)
    ON CONFLICT (id) DO NOTHING
    RETURNING * INTO j;
    IF FOUND THEN
        PERFORM pg_notify('memmie_jobs', j.job_type);
    ELSE
        -- idempotent: the job with this id exists already (when it is this user's)
        SELECT * INTO j FROM memmie.jobs x WHERE x.id = enqueue_job.job_id;
        IF j.user_id IS DISTINCT FROM enqueue_job.user_id THEN
            RAISE EXCEPTION 'job id % is already in use', enqueue_job.job_id USING ERRCODE = '23505';
        END IF;
    END IF;
    RETURN j;
END
$$;

CREATE OR REPLACE FUNCTION memmie.cancel_job(job_id text) RETURNS memmie.jobs
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    scope uuid := memmie._scope();
    j     memmie.jobs;
BEGIN
    -- another user's job is not visible here: the same answer as a missing one
    IF scope IS NOT NULL AND NOT EXISTS (SELECT FROM memmie.jobs x WHERE x.id = cancel_job.job_id AND x.user_id = scope) THEN
        RAISE EXCEPTION 'job % does not exist', cancel_job.job_id USING ERRCODE = 'P0002';
    END IF;
    j := memmie._lock_job(cancel_job.job_id);
    IF j.status IN ('queued', 'running') THEN
        UPDATE memmie.jobs x
        SET status = 'cancelled', completed_at = clock_timestamp(), worker_id = NULL,
            lease_expires_at = NULL
        WHERE x.id = j.id
        RETURNING * INTO j;
    END IF;
    RETURN j;
END
$$;

CREATE OR REPLACE FUNCTION memmie.user_usage(user_id uuid, from_date date DEFAULT NULL, to_date date DEFAULT NULL)
RETURNS SETOF memmie.usage_metrics
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    PERFORM memmie._acting_user(user_usage.user_id);
    PERFORM memmie.fold_usage();
    RETURN QUERY
    SELECT * FROM memmie.usage_metrics m
    WHERE m.user_id = user_usage.user_id
      AND (user_usage.from_date IS NULL OR m.metric_date >= user_usage.from_date)
      AND (user_usage.to_date IS NULL OR m.metric_date <= user_usage.to_date)
    ORDER BY m.metric_date DESC;
END
$$;

CREATE OR REPLACE FUNCTION memmie.record_api_call(user_id uuid, ok boolean, response_ms int) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    PERFORM memmie._acting_user(record_api_call.user_id);
    PERFORM memmie._require(record_api_call.ok, 'ok');
    PERFORM memmie._require(record_api_call.response_ms, 'response_ms');
    IF record_api_call.response_ms < 0 THEN
        RAISE EXCEPTION 'response_ms must not be negative, got %', record_api_call.response_ms
            USING ERRCODE = '22023';
    END IF;
    IF NOT EXISTS (SELECT FROM memmie.user_contexts u WHERE u.user_id = record_api_call.user_id) THEN
        INSERT INTO memmie.user_contexts (user_id) VALUES (record_api_call.user_id) ON CONFLICT DO NOTHING;
    END IF;
    INSERT INTO memmie.usage_increments (user_id, api_calls, api_errors, response_time_ms)
    VALUES (record_api_call.user_id, 1, (NOT record_api_call.ok)::int, record_api_call.response_ms);
END
$$;

CREATE OR REPLACE FUNCTION memmie.complete_processing(processing_id uuid, worker_id text, outputs jsonb)
RETURNS SETOF memmie.blobs
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    pr        memmie.provider_processing;
    created   boolean;
    p         memmie.providers;
    b         memmie.blobs;
    child     memmie.blobs;
    c         jsonb;
    i         int := 0;
    k         int;
    ttype     text;
    caused_by uuid;
    cause     jsonb;
    d         memmie.deltas;
    patch_id  uuid;
    patch_err text;
    out_ids   uuid[] := '{}';
    out_size  bigint := 0;
    content   bytea;
    first_delta uuid;
BEGIN
    -- the job is locked and its lease checked from here on
    pr := memmie._leased_processing(complete_processing.processing_id, complete_processing.worker_id);
    PERFORM memmie._require(complete_processing.outputs, 'outputs');
    IF jsonb_typeof(complete_processing.outputs) <> 'object' THEN
        RAISE EXCEPTION 'outputs must be a JSON object, got %', jsonb_typeof(complete_processing.outputs)
            USING ERRCODE = '22023';
    END IF;
    IF EXISTS (SELECT FROM jsonb_object_keys(complete_processing.outputs) key
               WHERE key NOT IN ('children', 'patch', 'metadata')) THEN
        RAISE EXCEPTION 'outputs may hold only "children", "patch" and "metadata"' USING ERRCODE = '22023';
    END IF;
    IF complete_processing.outputs ? 'children' AND jsonb_typeof(complete_processing.outputs -> 'children') <> 'array' THEN
        RAISE EXCEPTION 'outputs.children must be an array' USING ERRCODE = '22023';
    END IF;
    IF complete_processing.outputs ? 'patch' AND jsonb_typeof(complete_processing.outputs -> 'patch') <> 'array' THEN
        RAISE EXCEPTION 'outputs.patch must be a JSON Patch (an array of operations)' USING ERRCODE = '22023';
    END IF;
    SELECT * INTO p FROM memmie.providers x WHERE x.id = pr.provider_id;
    IF p.output_schema IS NOT NULL THEN
        PERFORM memmie._validate_json(p.output_schema, complete_processing.outputs,
                                      format('output of provider %s', p.id));
    END IF;

    b := memmie._lock_blob(pr.blob_id, NULL);
    IF b.deleted_at IS NOT NULL THEN
        -- the input was deleted while it was processed: nothing to attach the outputs to
        UPDATE memmie.provider_processing x
        SET status = 'skipped', completed_at = clock_timestamp(),
            error_message = format('blob %s was deleted before the processing completed', b.id)
        WHERE x.id = pr.id;
        PERFORM memmie._complete_job(pr.job_id, complete_processing.worker_id, jsonb_build_object('skipped', 'input deleted'), true);
        RETURN;
    END IF;
    SELECT v.delta_id INTO caused_by FROM memmie.blob_versions v
    WHERE v.blob_id = b.id AND v.version = pr.processed_version;
    cause := jsonb_build_object('processing_id', pr.id, 'provider_id', p.id,
                                'provider_version', pr.provider_version,
                                'event_id', pr.metadata -> 'event_id',
                                'event_type', pr.metadata -> 'event_type');

    -- a patch of the input: recorded pending, then applied, or failed when it no longer applies
    IF complete_processing.outputs ? 'patch' THEN
        INSERT INTO memmie.deltas (blob_id, user_id, operation, provider_id, patch, from_version,
                                   to_version, caused_by_delta_id, caused_by_event, status)
        VALUES (b.id, b.user_id, 'transform', p.id, complete_processing.outputs -> 'patch', b.version,
                b.version + 1, caused_by, cause, 'pending')
        RETURNING id INTO patch_id;
        BEGIN
            d := memmie._apply_patch(b, complete_processing.outputs -> 'patch', p.id, caused_by, cause,
                                     patch_id);
        EXCEPTION WHEN invalid_parameter_value OR SQLSTATE 'MM007' OR SQLSTATE 'MM002'
                       OR program_limit_exceeded THEN
            patch_err := SQLERRM;
            UPDATE memmie.deltas x SET status = 'failed', error_message = patch_err WHERE x.id = patch_id;
        END;
        SELECT * INTO b FROM memmie.blobs x WHERE x.id = b.id;
    END IF;

    -- children: a new derived blob each, or a new version of the child this provider derived
    -- from this input before (matched by transform_type, in order)
    FOR c IN SELECT x FROM jsonb_array_elements(coalesce(complete_processing.outputs -> 'children', '[]')) x LOOP
        IF jsonb_typeof(c) <> 'object' THEN
            RAISE EXCEPTION 'outputs.children[%] must be an object', i USING ERRCODE = '22023';
        END IF;
        IF jsonb_typeof(c -> 'content_type') IS DISTINCT FROM 'string' THEN
            RAISE EXCEPTION 'outputs.children[%].content_type must be a string', i USING ERRCODE = '22023';
        END IF;
        IF c ? 'metadata' AND jsonb_typeof(c -> 'metadata') <> 'object' THEN
            RAISE EXCEPTION 'outputs.children[%].metadata must be an object', i USING ERRCODE = '22023';
        END IF;
        IF c ? 'tags' AND (jsonb_typeof(c -> 'tags') <> 'array'
                           OR jsonb_path_exists(c -> 'tags', '$[*] ? (@.type() != "string")')) THEN
            RAISE EXCEPTION 'outputs.children[%].tags must be an array of strings', i USING ERRCODE = '22023';
        END IF;
        IF c ? 'transform_type' AND jsonb_typeof(c -> 'transform_type') <> 'string' THEN
            RAISE EXCEPTION 'outputs.children[%].transform_type must be a string', i USING ERRCODE = '22023';
        END IF;
        content := memmie._child_bytes(c, i);
        ttype := memmie._check_text(coalesce(c ->> 'transform_type', 'derived'), 'transform_type', 255);
        -- the k-th child of this transform type in the outputs matches the k-th existing one
        SELECT count(*) INTO k FROM jsonb_array_elements(complete_processing.outputs -> 'children')
                                    WITH ORDINALITY o(x, n)
        WHERE o.n <= i AND coalesce(o.x ->> 'transform_type', 'derived') = ttype;
        SELECT cb.* INTO child FROM memmie.blob_edges e
        JOIN memmie.blobs cb ON cb.id = e.child_blob_id AND cb.user_id = e.user_id
        WHERE e.parent_blob_id = b.id AND e.user_id = b.user_id AND e.provider_id = p.id AND e.transform_type = ttype
          AND cb.deleted_at IS NULL
        ORDER BY cb.created_at, cb.id
        OFFSET k LIMIT 1
        FOR NO KEY UPDATE OF cb;
        created := NOT FOUND;
        IF NOT created THEN
            -- a new version of that child: new content, type, metadata and tags
            child := memmie._replace_content(child, content, c ->> 'content_type', p.id, caused_by, cause,
                                             coalesce(c -> 'metadata', '{}'),
                                             ARRAY(SELECT jsonb_array_elements_text(coalesce(c -> 'tags', '[]'))));
        ELSE
            child := memmie._derive(ARRAY[b.id], p.id, ttype, content, c ->> 'content_type',
                                    coalesce(c -> 'metadata', '{}'),
                                    ARRAY(SELECT jsonb_array_elements_text(coalesce(c -> 'tags', '[]'))),
                                    caused_by, cause, NULL);
        END IF;
        UPDATE memmie.blob_edges e
        SET version_map = CASE WHEN created THEN '[]'::jsonb ELSE e.version_map END
                          || jsonb_build_array(jsonb_build_object('parent_version', pr.processed_version,
                                                                  'child_version', child.version))
        WHERE e.parent_blob_id = b.id AND e.child_blob_id = child.id AND e.provider_id = p.id
          AND e.user_id = b.user_id;
        IF first_delta IS NULL THEN
            first_delta := memmie._head_delta(child);
        END IF;
        out_ids := out_ids || child.id;
        out_size := out_size + length(content);
        i := i + 1;
        RETURN NEXT child;
    END LOOP;
    IF d.id IS NOT NULL THEN
        RETURN NEXT b;
    END IF;

    UPDATE memmie.provider_processing x
    SET status = 'completed', completed_at = clock_timestamp(),
        processing_time_ms = (extract(epoch FROM clock_timestamp() - x.started_at) * 1000)::int,
        output_size = out_size + coalesce(length((complete_processing.outputs -> 'patch')::text), 0),
        output_blob_id = out_ids[1],
        output_delta_id = coalesce(patch_id, first_delta),
        current_blob_version = b.version,
        error_message = patch_err,
        metadata = x.metadata || jsonb_build_object('output_blob_ids', to_jsonb(out_ids))
                 || CASE WHEN patch_id IS NULL THEN '{}'::jsonb
                         ELSE jsonb_build_object('patch_status', CASE WHEN patch_err IS NULL THEN 'applied' ELSE 'failed' END)
                    END
                 || coalesce(complete_processing.outputs -> 'metadata', '{}')
    WHERE x.id = pr.id
    RETURNING * INTO pr;
    INSERT INTO memmie.usage_increments (user_id, blobs_processed, provider_id, provider_invocations,
                                         processing_time_ms)
    VALUES (pr.user_id, 1, pr.provider_id, 1, coalesce(pr.processing_time_ms, 0));
    PERFORM memmie._complete_job(pr.job_id, complete_processing.worker_id,
                                 jsonb_build_object('output_blob_ids', to_jsonb(out_ids), 'output_delta_id', patch_id),
                                 true);
END
$$;

-- Workers read a job's input while they hold its lease, and see how much work is left.
-- What is left to do, for a worker deciding whether it is idle: events not dispatched yet, and
-- jobs queued or running (of job_type when given). Counts only: no user's data.
CREATE FUNCTION memmie.pending_work(job_type text DEFAULT NULL)
RETURNS TABLE (undispatched_events bigint, open_jobs bigint)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT (SELECT count(*) FROM memmie.events e WHERE NOT e.processed),
           (SELECT count(*) FROM memmie.jobs j
            WHERE j.status IN ('queued', 'running') AND ($1 IS NULL OR j.job_type = $1))
$$;

CREATE FUNCTION memmie.processing_input(processing_id uuid, worker_id text)
RETURNS TABLE (blob_id uuid, version int, content_type text, content bytea, metadata jsonb,
               provider_id text, provider_version text, definition jsonb,
               storage_backend text, storage_path text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    pr memmie.provider_processing;
    j  memmie.jobs;
    v  memmie.blob_versions;
BEGIN
    SELECT * INTO pr FROM memmie.provider_processing x
    WHERE x.id = memmie._require(processing_input.processing_id, 'processing_id');
    IF NOT FOUND THEN
        RAISE EXCEPTION 'processing % does not exist', processing_input.processing_id USING ERRCODE = 'P0002';
    END IF;
    SELECT * INTO j FROM memmie.jobs x WHERE x.id = pr.job_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'processing % has no job: worker % does not hold it', pr.id, processing_input.worker_id
            USING ERRCODE = 'MM005';
    END IF;
    PERFORM memmie._check_lease(j, processing_input.worker_id);
    SELECT * INTO v FROM memmie.blob_versions x
    WHERE x.blob_id = pr.blob_id AND x.version = pr.processed_version;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'blob % has no version %', pr.blob_id, pr.processed_version USING ERRCODE = 'P0002';
    END IF;
    RETURN QUERY
    SELECT v.blob_id, v.version, v.content_type::text,
           CASE WHEN c.storage_backend = 'postgres' THEN memmie._content(v.content_hash) END,
           v.metadata, pr.provider_id::text, pr.provider_version::text,
           (SELECT pv.definition FROM memmie.provider_versions pv
            WHERE pv.provider_id = pr.provider_id AND pv.version = pr.provider_version),
           c.storage_backend::text, c.storage_path
    FROM memmie.content_storage c WHERE c.content_hash = v.content_hash;
END
$$;


-- ---------------------------------------------------------------------------------------------
-- Long histories (issue 15): replay starts from the nearest kept state (blob_snapshots, written
-- with every memmie.snapshot_interval-th version), check() compares the kept states with the
-- replay and accepts a squashed history, squash_history() compacts one, and maintenance()
-- applies the per-user retention quota_limits.keep_versions. The blobs of 0.2.0 get their kept
-- states here, from their stored versions (the states check() proves equal to the replay), at
-- the versions a write would have kept them. (check() and maintenance() are brought up to date
-- in their steps above.)
CREATE TABLE memmie.blob_snapshots (
    blob_id uuid NOT NULL,
    version integer NOT NULL,
    -- the blob's user (its versions' user): on a Citus cluster the table is distributed by it
    user_id uuid NOT NULL,
    state   jsonb NOT NULL CHECK (jsonb_typeof(state) = 'object'),
    PRIMARY KEY (blob_id, version),
    CONSTRAINT fk_version FOREIGN KEY (blob_id, version)
        REFERENCES memmie.blob_versions (blob_id, version) ON DELETE CASCADE
);
SELECT pg_catalog.pg_extension_config_dump('memmie.blob_snapshots', '');

CREATE FUNCTION memmie."_snapshot_interval"() RETURNS INT
STRICT STABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'snapshot_interval_wrapper';
REVOKE ALL ON FUNCTION memmie._snapshot_interval() FROM PUBLIC;

CREATE FUNCTION memmie."_replay_from"(
	"base" jsonb,
	"patches" TEXT[]
) RETURNS jsonb
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'replay_from_wrapper';
REVOKE ALL ON FUNCTION memmie._replay_from(jsonb, text[]) FROM PUBLIC;

CREATE OR REPLACE FUNCTION memmie._write_state(b memmie.blobs, s jsonb, p_operation text, p_patch jsonb,
                                    p_provider text, p_caused_by uuid DEFAULT NULL,
                                    p_caused_event jsonb DEFAULT NULL,
                                    p_pending_delta uuid DEFAULT NULL)
RETURNS memmie.deltas
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    nb         memmie.blobs;
    event_type text := 'blob.updated';
    d          memmie.deltas;
    interval_  int;
BEGIN
    UPDATE memmie.blobs
    SET content_hash = s ->> 'content_hash',
        content_size = (s ->> 'content_size')::bigint,
        content_type = s ->> 'content_type',
        metadata     = s -> 'metadata',
        tags         = ARRAY(SELECT jsonb_array_elements_text(s -> 'tags')),
        version      = b.version + 1,
        deleted_at   = CASE WHEN s ? 'deleted' THEN coalesce(b.deleted_at, CURRENT_TIMESTAMP) END
    WHERE id = b.id
    RETURNING * INTO nb;
    IF nb.deleted_at IS NOT NULL AND b.deleted_at IS NULL THEN
        event_type := 'blob.deleted';
    END IF;
    d := memmie._record_version(nb, p_operation, p_patch, p_provider, p_caused_by,
                                p_caused_event, event_type, p_pending_delta);
    -- every snapshot_interval-th version keeps its whole state: replay starts there (blob_state)
    interval_ := memmie._snapshot_interval();
    IF interval_ > 0 AND nb.version % interval_ = 0 THEN
        INSERT INTO memmie.blob_snapshots (blob_id, version, user_id, state) VALUES (nb.id, nb.version, nb.user_id, s);
    END IF;
    RETURN d;
END
$$;

CREATE FUNCTION memmie._state_of(b memmie.blobs, v int) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    snap memmie.blob_snapshots;
    s    jsonb;
BEGIN
    -- (versions before a squash_history are gone)
    IF NOT EXISTS (SELECT FROM memmie.blob_versions x WHERE x.blob_id = b.id AND x.version = v) THEN
        RAISE EXCEPTION 'blob % has no version %', b.id, v USING ERRCODE = 'P0002';
    END IF;
    SELECT * INTO snap FROM memmie.blob_snapshots x
    WHERE x.blob_id = b.id AND x.user_id = b.user_id AND x.version <= v ORDER BY x.version DESC LIMIT 1;
    IF snap.state IS NULL THEN
        SELECT memmie._replay(array_agg(d.patch::text ORDER BY d.to_version))::jsonb INTO s
        FROM memmie.deltas d
        WHERE d.blob_id = b.id AND d.status = 'applied' AND d.to_version <= v;
    ELSE
        SELECT memmie._replay_from(snap.state, coalesce(array_agg(d.patch::text ORDER BY d.to_version), '{}'))
        INTO s
        FROM memmie.deltas d
        WHERE d.blob_id = b.id AND d.status = 'applied' AND d.to_version > snap.version
          AND d.to_version <= v;
    END IF;
    RETURN s;
END
$$;

CREATE OR REPLACE FUNCTION memmie.blob_state(blob_id uuid, version int DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    b memmie.blobs := memmie._visible_blob(blob_state.blob_id);
BEGIN
    RETURN memmie._state_of(b, coalesce(blob_state.version, b.version));
END
$$;

CREATE FUNCTION memmie._squash_history(p_blob uuid, p_before int, p_expected int, p_scope uuid)
RETURNS int
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    b        memmie.blobs;
    base     int;
    n        int;
    event_id uuid;
BEGIN
    PERFORM memmie._require(p_before, 'before_version');
    b := memmie._lock_blob(p_blob, p_scope);
    PERFORM memmie._check_live(b);
    PERFORM memmie._check_expected(b, p_expected);
    IF p_before < 1 OR p_before > b.version THEN
        RAISE EXCEPTION 'before_version must be between 1 and the version of blob % (%), got %',
            b.id, b.version, p_before USING ERRCODE = '22023';
    END IF;
    SELECT min(x.version) INTO base FROM memmie.blob_versions x WHERE x.blob_id = b.id;
    IF p_before <= base THEN
        RETURN 0;
    END IF;
    -- the new base keeps its state whole (it may be a snapshot already)
    INSERT INTO memmie.blob_snapshots (blob_id, version, user_id, state)
    VALUES (b.id, p_before, b.user_id, memmie._state_of(b, p_before))
    ON CONFLICT ON CONSTRAINT blob_snapshots_pkey DO NOTHING;
    DELETE FROM memmie.blob_versions x WHERE x.blob_id = b.id AND x.version < p_before;
    GET DIAGNOSTICS n = ROW_COUNT;
    DELETE FROM memmie.deltas d WHERE d.blob_id = b.id AND d.to_version < p_before;
    INSERT INTO memmie.events (event_type, aggregate_id, aggregate_type, user_id, payload, created_at)
    VALUES ('blob.squashed', b.id, 'blob', b.user_id,
            jsonb_build_object('blob_id', b.id, 'version', b.version, 'delta_id', NULL,
                               'operation', 'squash', 'content_type', b.content_type,
                               'created_by', 'user', 'before_version', p_before,
                               'versions_removed', n), clock_timestamp())
    RETURNING id INTO event_id;
    PERFORM pg_notify('memmie_events', event_id::text);
    -- the day's usage, with the user's storage after the squash (as a hard delete records it)
    INSERT INTO memmie.usage_increments (user_id, storage_bytes_used)
    SELECT b.user_id, u.storage_used FROM memmie.user_contexts u WHERE u.user_id = b.user_id;
    RETURN n;
END
$$;

CREATE FUNCTION memmie.squash_history(blob_id uuid, before_version int, expected_version int DEFAULT NULL)
RETURNS int
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT memmie._squash_history(blob_id, before_version, expected_version, memmie._scope())
$$;

REVOKE ALL ON FUNCTION memmie.squash_history(uuid, integer, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION memmie._squash_history(uuid, integer, integer, uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION memmie._state_of(memmie.blobs, integer) FROM PUBLIC;

CREATE FUNCTION memmie._apply_keep_versions() RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r     record;
    total bigint := 0;
BEGIN
    FOR r IN
        SELECT b.id, b.version - q.keep + 1 AS before_version
        FROM memmie.user_contexts u
        CROSS JOIN LATERAL (SELECT floor((u.quota_limits ->> 'keep_versions')::numeric) AS keep) q
        JOIN memmie.blobs b ON b.user_id = u.user_id AND b.deleted_at IS NULL
        WHERE q.keep >= 1 AND b.version > q.keep
          AND (SELECT min(v.version) FROM memmie.blob_versions v WHERE v.blob_id = b.id) < b.version - q.keep + 1
        ORDER BY b.user_id, b.id
    LOOP
        BEGIN
            total := total + memmie._squash_history(r.id, r.before_version::int, NULL, NULL);
        EXCEPTION WHEN no_data_found THEN
            -- (P0002: deleted since the query read it; nothing to keep)
            NULL;
        END;
    END LOOP;
    RETURN total;
END
$$;

REVOKE ALL ON FUNCTION memmie._apply_keep_versions() FROM PUBLIC;

INSERT INTO memmie.blob_snapshots (blob_id, version, user_id, state)
SELECT v.blob_id, v.version, v.user_id,
       memmie._make_state(v.content_hash, v.content_size, v.content_type, v.metadata, v.tags, v.deleted)
FROM memmie.blob_versions v
WHERE memmie._snapshot_interval() OPERATOR(pg_catalog.>) 0
  AND v.version OPERATOR(pg_catalog.%) memmie._snapshot_interval() OPERATOR(pg_catalog.=) 0;

-- ---------------------------------------------------------------------------------------------
-- Citus

-- True when memmie's tables have been placed on a Citus cluster (memmie.distribute()): the
-- functions that must work differently there (the counting, the queue, GC, the event feed, the
-- DAG) take their distributed path. False on a single node, and with Citus loaded but memmie's
-- tables still local (the catalog of Citus is read only when it is there: without Citus the
-- answer is one catalog cache lookup, under a microsecond).
CREATE FUNCTION memmie._distributed() RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF pg_catalog.to_regclass('pg_catalog.pg_dist_partition') IS NULL THEN
        RETURN false;
    END IF;
    RETURN EXISTS (SELECT FROM pg_catalog.pg_dist_partition d
                   WHERE d.logicalrelid OPERATOR(pg_catalog.=) 'memmie.blobs'::pg_catalog.regclass);
END
$$;

-- ---------------------------------------------------------------------------------------------
-- memmie on Citus (issue 16): distribute() places the tables on a Citus cluster (admin level;
-- sql/distribute.sql), and a partition made after it gets user_id in its key. Before the
-- privileges below, which revoke them from PUBLIC and make distribute() SECURITY DEFINER.
CREATE FUNCTION memmie._citus_key(p_table regclass, p_name text, p_def text) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
-- Makes constraint p_name of p_table be p_def (a definition as pg_get_constraintdef prints it):
-- nothing when it already is, else drops the old one (if any) and adds it. True when it changed.
DECLARE
    old text;
BEGIN
    SELECT pg_catalog.pg_get_constraintdef(c.oid) INTO old
    FROM pg_catalog.pg_constraint c
    WHERE c.conrelid OPERATOR(pg_catalog.=) p_table AND c.conname OPERATOR(pg_catalog.=) p_name;
    IF old IS NOT DISTINCT FROM p_def THEN
        RETURN false;
    END IF;
    IF old IS NOT NULL THEN
        EXECUTE pg_catalog.format('ALTER TABLE %s DROP CONSTRAINT %I', p_table, p_name);
    END IF;
    IF p_def IS NOT NULL THEN
        EXECUTE pg_catalog.format('ALTER TABLE %s ADD CONSTRAINT %I %s', p_table, p_name, p_def);
    END IF;
    RETURN true;
END
$$;

CREATE FUNCTION memmie._citus_on_workers(p_sql text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
-- Runs p_sql on every Citus worker, in the worker's copy of memmie: CREATE EXTENSION memmie made
-- memmie's tables there too, and Citus keeps them as the tables' shells on the workers (it does
-- not make its own for a table an extension owns), so a key changed on the coordinator before
-- the table is placed must change there as well. p_sql must do nothing when run twice.
DECLARE
    r record;
BEGIN
    FOR r IN SELECT * FROM pg_catalog.run_command_on_workers(p_sql) LOOP
        IF NOT r.success THEN
            RAISE EXCEPTION 'memmie.distribute(): worker %:% refused %: %', r.nodename, r.nodeport, p_sql, r.result
                USING ERRCODE = '55000';
        END IF;
    END LOOP;
END
$$;

CREATE FUNCTION memmie.distribute() RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    placed  jsonb := '{}';
    changed int := 0;
    fks     jsonb;
    k       record;
    t       record;
    part    regclass;
    pkey    text;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname OPERATOR(pg_catalog.=) 'citus') THEN
        RAISE EXCEPTION 'memmie.distribute() needs the citus extension in this database'
            USING ERRCODE = '55000',
                  HINT = 'on a Citus coordinator: CREATE EXTENSION citus, citus_add_node() for each worker, then memmie.distribute()';
    END IF;
    IF NOT pg_catalog.citus_is_coordinator() THEN
        RAISE EXCEPTION 'memmie.distribute() runs on the Citus coordinator, not on a worker'
            USING ERRCODE = '55000';
    END IF;
    -- Every table placed: nothing to do (a second call).
    IF NOT EXISTS (SELECT FROM pg_catalog.unnest(ARRAY[
                       'memmie.providers', 'memmie.provider_versions', 'memmie.provider_metrics',
                       'memmie.grantees', 'memmie.user_contexts', 'memmie.blobs', 'memmie.blob_versions', 'memmie.blob_snapshots',
                       'memmie.blob_edges', 'memmie.user_content_refs',
                       'memmie.deltas', 'memmie.events', 'memmie.provider_processing', 'memmie.jobs',
                       'memmie.usage_metrics', 'memmie.usage_increments', 'memmie.content_storage']) x
                   WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_dist_partition d
                                     WHERE d.logicalrelid OPERATOR(pg_catalog.=) x::pg_catalog.regclass)) THEN
        RETURN pg_catalog.jsonb_build_object('placed', placed, 'keys_changed', changed,
            'coordinator_only', pg_catalog.jsonb_build_array());
    END IF;
    -- DDL on distributed and reference tables in one transaction: one connection per node
    PERFORM pg_catalog.set_config('citus.multi_shard_modify_mode', 'sequential', true);
    -- memmie's counting and bookkeeping triggers go with the tables (they run on the shards)
    PERFORM pg_catalog.set_config('citus.enable_unsafe_triggers', 'on', true);

    -- 1. Every foreign key between memmie's tables is dropped and made again once all are placed
    -- (a table placed while a local table references it, or it references a local one, makes
    -- Citus convert the local one, which fails: the extension made it on every node). On the way
    -- the foreign keys to blobs become (id, user_id) pairs (a derived blob has its parent's
    -- user; an edge joins two blobs of its user), and some are not made again: blob_versions to
    -- content_storage (not co-located) and provider_processing.output_blob_id (ON DELETE SET
    -- NULL: Citus refuses SET NULL in a key with the distribution column).
    SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
               'tab', c.conrelid::pg_catalog.regclass::pg_catalog.text, 'name', c.conname,
               'def', CASE WHEN c.conname OPERATOR(pg_catalog.=) 'blob_versions_content_hash_fkey'
                             OR c.confdeltype OPERATOR(pg_catalog.=) ANY (ARRAY['n', 'd']::"char"[]) THEN NULL
                           WHEN c.confrelid OPERATOR(pg_catalog.=) 'memmie.blob_versions'::pg_catalog.regclass
                               THEN 'FOREIGN KEY (blob_id, version, user_id) REFERENCES memmie.blob_versions(blob_id, version, user_id) ON DELETE CASCADE'
                           WHEN c.confrelid OPERATOR(pg_catalog.=) 'memmie.blobs'::pg_catalog.regclass
                               THEN pg_catalog.format('FOREIGN KEY (%I, user_id) REFERENCES memmie.blobs(id, user_id)%s',
                                        (SELECT a.attname FROM pg_catalog.pg_attribute a
                                         WHERE a.attrelid OPERATOR(pg_catalog.=) c.conrelid
                                           AND a.attnum OPERATOR(pg_catalog.=) c.conkey[1]),
                                        CASE c.confdeltype WHEN 'c' THEN ' ON DELETE CASCADE' ELSE '' END)
                           ELSE pg_catalog.pg_get_constraintdef(c.oid) END,
               'old', pg_catalog.pg_get_constraintdef(c.oid)))
    INTO fks
    FROM pg_catalog.pg_constraint c
    WHERE c.contype OPERATOR(pg_catalog.=) 'f' AND c.conparentid OPERATOR(pg_catalog.=) 0
      AND c.connamespace OPERATOR(pg_catalog.=) 'memmie'::pg_catalog.regnamespace;
    FOR k IN SELECT * FROM pg_catalog.jsonb_to_recordset(coalesce(fks, '[]')) AS x(tab text, name text, def text, old text) LOOP
        EXECUTE pg_catalog.format('ALTER TABLE %s DROP CONSTRAINT %I', k.tab, k.name);
        PERFORM memmie._citus_on_workers(pg_catalog.format('SELECT memmie._citus_key(%L, %L, NULL)', k.tab, k.name));
        IF k.def IS DISTINCT FROM k.old THEN
            changed := changed OPERATOR(pg_catalog.+) 1;
        END IF;
    END LOOP;

    -- 2. Primary keys and unique constraints with user_id, on the tables not placed yet.
    FOR k IN SELECT * FROM (VALUES
        ('memmie.blobs', 'blobs_pkey', 'PRIMARY KEY (id, user_id)'),
        ('memmie.blob_versions', 'blob_versions_pkey', 'PRIMARY KEY (blob_id, version, user_id)'),
        ('memmie.blob_snapshots', 'blob_snapshots_pkey', 'PRIMARY KEY (blob_id, version, user_id)'),
        ('memmie.blob_edges', 'blob_edges_pkey', 'PRIMARY KEY (id, user_id)'),
        ('memmie.blob_edges', 'unique_edge', 'UNIQUE (parent_blob_id, child_blob_id, provider_id, user_id)'),
        ('memmie.provider_processing', 'provider_processing_pkey', 'PRIMARY KEY (id, user_id)'),
        ('memmie.provider_processing', 'unique_processing', 'UNIQUE (blob_id, provider_id, processed_version, user_id)'),
        ('memmie.jobs', 'jobs_pkey', 'PRIMARY KEY (id, user_id)'),
        ('memmie.usage_metrics', 'usage_metrics_pkey', 'PRIMARY KEY (id, user_id)')) AS v(tab, name, def)
    WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_dist_partition d
                      WHERE d.logicalrelid OPERATOR(pg_catalog.=) v.tab::pg_catalog.regclass)
    LOOP
        IF memmie._citus_key(k.tab::pg_catalog.regclass, k.name, k.def) THEN
            changed := changed OPERATOR(pg_catalog.+) 1;
        END IF;
        PERFORM memmie._citus_on_workers(pg_catalog.format('SELECT memmie._citus_key(%L, %L, %L)', k.tab, k.name, k.def));
    END LOOP;
    -- deltas and events keep their primary keys on each partition (sql/partitions.sql)
    FOR part IN
        SELECT i.inhrelid::pg_catalog.regclass FROM pg_catalog.pg_inherits i
        WHERE i.inhparent OPERATOR(pg_catalog.=) ANY (ARRAY['memmie.deltas'::pg_catalog.regclass, 'memmie.events'::pg_catalog.regclass])
          AND NOT EXISTS (SELECT FROM pg_catalog.pg_dist_partition d
                          WHERE d.logicalrelid OPERATOR(pg_catalog.=) i.inhrelid::pg_catalog.regclass)
    LOOP
        pkey := (SELECT c.conname FROM pg_catalog.pg_constraint c
                 WHERE c.conrelid OPERATOR(pg_catalog.=) part AND c.contype OPERATOR(pg_catalog.=) 'p');
        IF memmie._citus_key(part, pkey, 'PRIMARY KEY (id, created_at, user_id)') THEN
            changed := changed OPERATOR(pg_catalog.+) 1;
        END IF;
        PERFORM memmie._citus_on_workers(pg_catalog.format('SELECT memmie._citus_key(%L, %L, %L)',
                                         part, pkey, 'PRIMARY KEY (id, created_at, user_id)'));
    END LOOP;

    -- 3. Row-level security: Citus refuses subqueries in the policies of distributed tables.
    -- The tenant tables' policy without its scalar subqueries (the same rows; the functions are
    -- then called per row); content_storage's (an EXISTS over user_content_refs) cannot do
    -- without one, so there only the admin level reads the table directly (functions read
    -- content for the bound user as before).
    FOR k IN
        SELECT pc.relid::pg_catalog.regclass::pg_catalog.text AS tab,
               CASE WHEN pc.relid OPERATOR(pg_catalog.=) 'memmie.content_storage'::pg_catalog.regclass
                    THEN 'memmie._unrestricted()'
                    ELSE 'user_id OPERATOR(pg_catalog.=) memmie._bound_user() OR memmie._unrestricted()' END AS qual
        FROM (SELECT pol.polrelid AS relid FROM pg_catalog.pg_policy pol
              WHERE pol.polname OPERATOR(pg_catalog.=) 'tenant_read'
                AND pg_catalog.pg_get_expr(pol.polqual, pol.polrelid) OPERATOR(pg_catalog.~~) '%SELECT%'
                AND NOT EXISTS (SELECT FROM pg_catalog.pg_dist_partition d
                                WHERE d.logicalrelid OPERATOR(pg_catalog.=) pol.polrelid)) pc
    LOOP
        EXECUTE pg_catalog.format('ALTER POLICY tenant_read ON %s USING (%s)', k.tab, k.qual);
        PERFORM memmie._citus_on_workers(pg_catalog.format('ALTER POLICY tenant_read ON %s USING (%s)', k.tab, k.qual));
        changed := changed OPERATOR(pg_catalog.+) 1;
    END LOOP;

    -- 4. Placement, in dependency order: the reference tables, then user_contexts, then the
    -- tables co-located with it, then content_storage.
    FOR t IN SELECT * FROM (VALUES
        (1, 'memmie.providers', 'reference', NULL),
        (2, 'memmie.provider_versions', 'reference', NULL),
        (3, 'memmie.provider_metrics', 'reference', NULL),
        (3, 'memmie.grantees', 'reference', NULL),
        (4, 'memmie.user_contexts', 'distributed', 'user_id'),
        (5, 'memmie.blobs', 'distributed', 'user_id'),
        (6, 'memmie.blob_versions', 'distributed', 'user_id'),
        (6, 'memmie.blob_snapshots', 'distributed', 'user_id'),
        (6, 'memmie.blob_edges', 'distributed', 'user_id'),
        (7, 'memmie.user_content_refs', 'distributed', 'user_id'),
        (8, 'memmie.deltas', 'distributed', 'user_id'),
        (9, 'memmie.events', 'distributed', 'user_id'),
        (10, 'memmie.provider_processing', 'distributed', 'user_id'),
        (11, 'memmie.jobs', 'distributed', 'user_id'),
        (12, 'memmie.usage_metrics', 'distributed', 'user_id'),
        (13, 'memmie.usage_increments', 'distributed', 'user_id'),
        (14, 'memmie.content_storage', 'by content', 'content_hash')) AS v(n, tab, how, col)
    WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_dist_partition d
                      WHERE d.logicalrelid OPERATOR(pg_catalog.=) v.tab::pg_catalog.regclass)
    ORDER BY n
    LOOP
        IF t.how OPERATOR(pg_catalog.=) 'reference' THEN
            PERFORM pg_catalog.create_reference_table(t.tab::pg_catalog.regclass);
        ELSIF t.tab OPERATOR(pg_catalog.=) 'memmie.user_contexts' OR t.how OPERATOR(pg_catalog.=) 'by content' THEN
            PERFORM pg_catalog.create_distributed_table(t.tab::pg_catalog.regclass, t.col, colocate_with => 'none');
        ELSE
            PERFORM pg_catalog.create_distributed_table(t.tab::pg_catalog.regclass, t.col,
                                                        colocate_with => 'memmie.user_contexts');
        END IF;
        placed := placed OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object(t.tab, t.how);
    END LOOP;

    -- 5. The foreign keys again, between placed tables.
    FOR k IN SELECT * FROM pg_catalog.jsonb_to_recordset(coalesce(fks, '[]')) AS x(tab text, name text, def text, old text)
             WHERE x.def IS NOT NULL LOOP
        EXECUTE pg_catalog.format('ALTER TABLE %s ADD CONSTRAINT %I %s', k.tab, k.name, k.def);
    END LOOP;

    RETURN pg_catalog.jsonb_build_object('placed', placed, 'keys_changed', changed,
        'coordinator_only', pg_catalog.jsonb_build_array());
END
$$;

CREATE OR REPLACE FUNCTION memmie._index_partition(p_parent text, p_part text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t   text := format('memmie.%I', p_part);
    key text := 'id, created_at';
    distributed boolean := false;
BEGIN
    IF to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL THEN
        EXECUTE 'SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition d
                                WHERE d.logicalrelid OPERATOR(pg_catalog.=) pg_catalog.to_regclass($1))'
            INTO distributed USING format('memmie.%I', p_parent);
    END IF;
    IF distributed THEN
        key := 'id, created_at, user_id';
    END IF;
    EXECUTE format('ALTER TABLE %s ADD PRIMARY KEY (%s)', t, key);
    IF p_parent = 'deltas' THEN
        EXECUTE format('CREATE INDEX ON %s (blob_id, to_version)', t);
        EXECUTE format('CREATE INDEX ON %s (user_id)', t);
        EXECUTE format($i$CREATE INDEX ON %s (status) WHERE status <> 'applied'$i$, t);
        EXECUTE format('CREATE INDEX ON %s (provider_id)', t);
        EXECUTE format('CREATE INDEX ON %s (created_at DESC)', t);
        EXECUTE format('CREATE INDEX ON %s (applied_at DESC) WHERE applied_at IS NOT NULL', t);
        EXECUTE format('CREATE INDEX ON %s (caused_by_delta_id) WHERE caused_by_delta_id IS NOT NULL', t);
        EXECUTE format($i$CREATE INDEX ON %s (created_at) WHERE status = 'pending'$i$, t);
    ELSIF p_parent = 'events' THEN
        EXECUTE format('CREATE INDEX ON %s (event_type)', t);
        EXECUTE format('CREATE INDEX ON %s (aggregate_id, aggregate_type)', t);
        EXECUTE format('CREATE INDEX ON %s (processed, created_at) WHERE processed = false', t);
        EXECUTE format('CREATE INDEX ON %s (created_at DESC)', t);
        EXECUTE format('CREATE INDEX ON %s (position) WHERE position IS NOT NULL', t);
        EXECUTE format('CREATE INDEX ON %s (created_at) WHERE position IS NULL', t);
    ELSE
        RAISE EXCEPTION 'memmie partitions deltas and events, not %', p_parent USING ERRCODE = '22023';
    END IF;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- hqueue: the queue, the event feed and partitions on Citus (issue 16)
--
-- On a Citus cluster (memmie._distributed()) claim_jobs, dispatch_events and the event feed take
-- a path of their own (sql/jobs.sql, sql/pipeline.sql: the reasons are there); on a single node
-- they stay as they were. The partition upkeep's changes are in the library (src/partitions.rs).
-- (maintenance() and _apply_keep_versions(), which it also changed, are defined once, with the
-- other concerns' changes, in the Routing section below.)
CREATE OR REPLACE FUNCTION memmie._claim_jobs_sharded(p_worker text, p_max int, p_lease interval, p_types text[],
                                           p_now timestamptz)
RETURNS SETOF memmie.jobs
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ids       text[];
    users     uuid[];
    v_id      text;
    v_user    uuid;
    v_msg     text;
    after_run timestamptz;
    after_at  timestamptz;
    after_id  text;
    last_run  timestamptz;
    last_at   timestamptz;
    limit_was int;
    j         memmie.jobs;
    n         int := 0;
BEGIN
    SELECT array_agg(x.id ORDER BY x.lease_expires_at), array_agg(x.user_id ORDER BY x.lease_expires_at)
    INTO ids, users
    FROM (SELECT e.id, e.user_id, e.lease_expires_at FROM memmie.jobs e
          WHERE e.status = 'running' AND e.lease_expires_at < p_now
          ORDER BY e.lease_expires_at
          LIMIT 100) x;
    FOR i IN 1 .. coalesce(cardinality(ids), 0) LOOP
        v_id := ids[i];
        v_user := users[i];
        -- (the message made here: format() of the row's columns is STABLE, which Citus refuses
        -- in a distributed UPDATE)
        SELECT format('lease of worker %s expired at %s', e.worker_id, e.lease_expires_at)
        INTO v_msg
        FROM memmie.jobs e
        WHERE e.id = v_id AND e.user_id = v_user
          AND e.status = 'running' AND e.lease_expires_at < p_now
        FOR UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        UPDATE memmie.jobs e
        SET status = CASE WHEN e.retry_count < e.max_retries THEN 'queued' ELSE 'failed' END,
            retry_count = least(e.retry_count + 1, e.max_retries),
            error_message = v_msg,
            completed_at = CASE WHEN e.retry_count < e.max_retries THEN NULL ELSE p_now END,
            run_after = p_now, worker_id = NULL, lease_expires_at = NULL
        WHERE e.id = v_id AND e.user_id = v_user;
    END LOOP;

    FOR r IN 1 .. 3 LOOP
        SELECT array_agg(x.id ORDER BY x.run_after, x.created_at, x.id),
               array_agg(x.user_id ORDER BY x.run_after, x.created_at, x.id),
               (array_agg(x.run_after ORDER BY x.run_after DESC, x.created_at DESC, x.id DESC))[1],
               (array_agg(x.created_at ORDER BY x.run_after DESC, x.created_at DESC, x.id DESC))[1]
        INTO ids, users, last_run, last_at
        FROM (SELECT e.id, e.user_id, e.run_after, e.created_at FROM memmie.jobs e
              WHERE e.status = 'queued' AND e.run_after <= p_now
                AND (e.expires_at IS NULL OR e.expires_at > p_now)
                AND (p_types IS NULL OR e.job_type = ANY (p_types))
                AND (after_id IS NULL OR (e.run_after, e.created_at, e.id::text) > (after_run, after_at, after_id))
                -- (SELECT 1: an empty select list trips citusdata/citus#5094)
                AND (e.job_type <> 'memmie.process' OR NOT EXISTS (
                         SELECT 1 FROM memmie.providers p
                         WHERE p.id = e.input ->> 'provider_id' AND p.status <> 'active'))
              ORDER BY e.run_after, e.created_at, e.id
              LIMIT 2 * (p_max - n) + 8) x;
        EXIT WHEN ids IS NULL;
        limit_was := 2 * (p_max - n) + 8;
        FOR i IN 1 .. cardinality(ids) LOOP
            v_id := ids[i];
            v_user := users[i];
            WITH l AS MATERIALIZED (
                SELECT e.id FROM memmie.jobs e
                WHERE e.id = v_id AND e.user_id = v_user
                  AND e.status = 'queued' AND e.run_after <= p_now
                  AND (e.expires_at IS NULL OR e.expires_at > p_now)
                FOR UPDATE SKIP LOCKED
            )
            UPDATE memmie.jobs e
            SET status = 'running', worker_id = p_worker,
                lease_expires_at = p_now + p_lease, lease_duration = p_lease,
                heartbeat_at = p_now, started_at = p_now, progress = 0
            FROM l WHERE e.id = l.id AND e.user_id = v_user
            RETURNING e.* INTO j;
            IF j.id IS NOT NULL THEN
                n := n + 1;
                RETURN NEXT j;
                IF n >= p_max THEN
                    RETURN;
                END IF;
                j := NULL;
            END IF;
        END LOOP;
        -- another round only when this one found as many as it asked for (there may be more)
        EXIT WHEN cardinality(ids) < limit_was;
        after_run := last_run;
        after_at := last_at;
        after_id := ids[cardinality(ids)];
    END LOOP;
END
$$;

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
    -- On a Citus cluster the claim goes shard by shard (memmie._claim_jobs_sharded, below); on a
    -- single node it stays the one-statement claim tuned here.
    IF memmie._distributed() THEN
        IF array_ndims(claim_jobs.job_types) > 1 OR array_lower(claim_jobs.job_types, 1) <> 1 THEN
            claim_jobs.job_types := ARRAY(SELECT unnest(claim_jobs.job_types));
        END IF;
        RETURN QUERY SELECT * FROM memmie._claim_jobs_sharded(claim_jobs.worker_id, claim_jobs.max_jobs,
                                                              claim_jobs.lease, claim_jobs.job_types, t_now);
        RETURN;
    END IF;
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

CREATE OR REPLACE FUNCTION memmie._sequence_events_sharded(p_max int) RETURNS int
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ids uuid[];
    pos bigint[];
    n   int;
BEGIN
    IF NOT pg_catalog.citus_is_coordinator() THEN
        RETURN 0;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('memmie.sequence_events', 0));
    SELECT array_agg(x.id ORDER BY x.created_at, x.id) INTO ids
    FROM (SELECT e.id, e.created_at FROM memmie.events e
          WHERE e.position IS NULL
          ORDER BY e.created_at, e.id
          LIMIT p_max) x;
    IF ids IS NULL THEN
        RETURN 0;
    END IF;
    pos := ARRAY(SELECT nextval('memmie.event_position_seq') FROM generate_series(1, cardinality(ids)));
    UPDATE memmie.events e SET position = s.pos
    FROM unnest(ids, pos) s(id, pos)
    WHERE e.id = s.id AND e.position IS NULL;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

CREATE OR REPLACE FUNCTION memmie._sequence_events(p_max int DEFAULT 10000) RETURNS int
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n int;
BEGIN
    IF memmie._distributed() THEN
        RETURN memmie._sequence_events_sharded(p_max);
    END IF;
    IF NOT pg_try_advisory_xact_lock(hashtextextended('memmie.sequence_events', 0)) THEN
        RETURN 0;   -- another session is sequencing; its positions appear when it commits
    END IF;
    UPDATE memmie.events e SET position = s.pos
    FROM (SELECT u.id, u.created_at, nextval('memmie.event_position_seq') AS pos
          FROM (SELECT x.id, x.created_at FROM memmie.events x
                WHERE x.position IS NULL
                ORDER BY x.created_at, x.id
                LIMIT p_max
                FOR UPDATE SKIP LOCKED) u) s
    WHERE e.id = s.id AND e.created_at = s.created_at;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

CREATE OR REPLACE FUNCTION memmie.events_since(after_position bigint DEFAULT 0, max_events int DEFAULT 100)
RETURNS SETOF memmie.events
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    PERFORM memmie._require(events_since.after_position, 'after_position');
    IF events_since.max_events IS NULL OR events_since.max_events < 1 OR events_since.max_events > 10000 THEN
        RAISE EXCEPTION 'max_events must be between 1 and 10000, got %', events_since.max_events
            USING ERRCODE = '22023';
    END IF;
    IF memmie._distributed() THEN
        IF NOT pg_catalog.citus_is_coordinator() THEN
            RAISE EXCEPTION 'memmie.events_since() runs on the Citus coordinator, not on a worker'
                USING ERRCODE = '55000',
                      DETAIL = 'the positions of the feed are given and read under a lock of the coordinator';
        END IF;
        -- reads under the sequencing lock, which _sequence_events_sharded takes: no round of
        -- positions is half committed meanwhile (see there)
    END IF;
    PERFORM memmie._sequence_events();
    RETURN QUERY SELECT * FROM memmie.events e
                 WHERE e.position > events_since.after_position
                 ORDER BY e.position
                 LIMIT events_since.max_events;
END
$$;

CREATE OR REPLACE FUNCTION memmie._dispatch_events_sharded(p_max int) RETURNS int
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t_now     timestamptz := clock_timestamp();
    users     uuid[];
    ids       uuid[];
    u         uuid;
    uids      uuid[];
    after_at  timestamptz;
    after_id  uuid;
    last_at   timestamptz;
    limit_was int;
    ev_id     uuid[] := '{}';
    ev_at     timestamptz[] := '{}';
    ev_type   text[] := '{}';
    ev_agg    uuid[] := '{}';
    ev_aggt   text[] := '{}';
    ev_pay    jsonb[] := '{}';
    ev_user   uuid[] := '{}';
    blobs     uuid[];
    providers text[];
    metadata  jsonb[];
BEGIN
    FOR r IN 1 .. 3 LOOP
        SELECT array_agg(x.user_id ORDER BY x.created_at, x.id), array_agg(x.id ORDER BY x.created_at, x.id),
               max(x.created_at)
        INTO users, ids, last_at
        FROM (SELECT e.user_id, e.id, e.created_at FROM memmie.events e
              WHERE e.processed = false
                AND (after_at IS NULL OR (e.created_at, e.id) > (after_at, after_id))
              ORDER BY e.created_at, e.id
              LIMIT p_max - cardinality(ev_id)) x;
        limit_was := p_max - cardinality(ev_id);
        EXIT WHEN ids IS NULL;
        FOR u, uids IN SELECT x.u, array_agg(x.id) FROM unnest(users, ids) x(u, id) GROUP BY x.u LOOP
            WITH c AS MATERIALIZED (
                SELECT e.id, e.created_at FROM memmie.events e
                WHERE e.user_id = u AND e.processed = false AND e.id = ANY (uids)
                FOR UPDATE SKIP LOCKED
            ), marked AS (
                UPDATE memmie.events e SET processed = true, processed_at = t_now
                FROM c WHERE e.user_id = u AND e.id = c.id AND e.created_at = c.created_at
                RETURNING e.id, e.created_at, e.event_type, e.aggregate_id, e.aggregate_type, e.payload
            )
            SELECT ev_id || coalesce(array_agg(m.id), '{}'), ev_at || coalesce(array_agg(m.created_at), '{}'),
                   ev_type || coalesce(array_agg(m.event_type::text), '{}'), ev_agg || coalesce(array_agg(m.aggregate_id), '{}'),
                   ev_aggt || coalesce(array_agg(m.aggregate_type::text), '{}'), ev_pay || coalesce(array_agg(m.payload), '{}'),
                   ev_user || coalesce(array_agg(u), '{}')
            INTO ev_id, ev_at, ev_type, ev_agg, ev_aggt, ev_pay, ev_user
            FROM marked m;
        END LOOP;
        -- another round only when this one found as many as it asked for (there may be more)
        EXIT WHEN cardinality(ev_id) >= p_max OR cardinality(ids) < limit_was;
        after_at := last_at;
        after_id := ids[cardinality(ids)];
    END LOOP;
    IF cardinality(ev_id) = 0 THEN
        RETURN 0;
    END IF;
    SELECT array_agg(m.blob_id), array_agg(m.provider_id), array_agg(m.metadata)
    INTO blobs, providers, metadata
    FROM (SELECT DISTINCT ON (b.user_id, b.id, p.id) b.id AS blob_id, p.id AS provider_id,
                 jsonb_build_object('event_id', ev.id, 'event_type', ev.event_type) AS metadata
          FROM unnest(ev_id, ev_at, ev_type, ev_agg, ev_aggt, ev_pay, ev_user)
                   AS ev(id, created_at, event_type, aggregate_id, aggregate_type, payload, user_id)
          JOIN memmie.blobs b ON ev.aggregate_type = 'blob' AND b.id = ev.aggregate_id AND b.user_id = ev.user_id
          JOIN memmie.blob_versions v ON v.blob_id = b.id AND v.user_id = b.user_id
               AND v.version = (ev.payload ->> 'version')::int
          JOIN memmie.providers p ON ev.event_type = ANY (p.trigger_events)
          LEFT JOIN memmie.blob_versions pv ON pv.blob_id = b.id AND pv.user_id = b.user_id
               AND pv.version = v.version - 1
          -- (the rows spelled out: a whole-row reference would be a shard's row type on a worker)
          WHERE memmie._matches(ROW(p.*)::memmie.providers, ROW(b.*)::memmie.blobs, ROW(v.*)::memmie.blob_versions)
            AND NOT (ev.event_type = 'blob.updated'
                     AND (p.processing_rules ->> 'content_changes_only')::boolean IS TRUE
                     AND pv.content_hash IS NOT DISTINCT FROM v.content_hash AND pv.version IS NOT NULL)
          ORDER BY b.user_id, b.id, p.id, ev.created_at) m;
    PERFORM memmie._queue_processing(blobs, providers, metadata);
    RETURN cardinality(ev_id);
END
$$;

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
    IF memmie._distributed() THEN
        RETURN memmie._dispatch_events_sharded(dispatch_events.max_events);
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
-- The DAG on Citus: blob_edges carries its blobs' user (an edge never joins two users' blobs),
-- so that distribute() can place it with the blobs, by user_id, and a user's whole DAG lies on
-- that user's shards. Filled from the child blob (the foreign key makes it exist). The writers
-- (_insert_blob, _derive, add_edge) and the readers (delete_blob, _find_blobs_sql,
-- complete_processing, check) above name it; lineage becomes PL/pgSQL (below).
ALTER TABLE memmie.blob_edges ADD COLUMN user_id uuid;
UPDATE memmie.blob_edges e SET user_id = b.user_id
FROM memmie.blobs b WHERE b.id OPERATOR(pg_catalog.=) e.child_blob_id;
ALTER TABLE memmie.blob_edges ALTER COLUMN user_id SET NOT NULL;

-- The cycle check of add_edge (above) with the blobs' user: on a Citus cluster it reads that
-- user's edges only, on the user's shard (src/dag.rs).
CREATE FUNCTION memmie."_would_cycle"(
	"parent" uuid,
	"child" uuid,
	"user_id" uuid
) RETURNS bool
STRICT STABLE PARALLEL SAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'would_cycle_of_user_wrapper';

-- The blob, its ancestors (negative depth) and descendants (positive depth), and every edge
-- between them. PL/pgSQL, and the blobs and edges read by the user's id: on a Citus cluster a
-- LANGUAGE sql function whose parameter filters a distributed table cannot be planned, and a
-- user's DAG lies on that user's shards (one router query each).
CREATE OR REPLACE FUNCTION memmie.lineage(blob_id uuid) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ids    uuid[];
    depths int[];
    u      uuid;
BEGIN
    -- ancestors() and descendants() say what is wrong with blob_id (NULL, missing, not visible)
    SELECT array_agg(n.id), array_agg(n.depth) INTO ids, depths
    FROM (SELECT a.blob_id AS id, -a.depth AS depth FROM memmie.ancestors(lineage.blob_id) a
          UNION ALL
          SELECT d.blob_id, d.depth FROM memmie.descendants(lineage.blob_id) d) n;
    u := (memmie._visible_blob(lineage.blob_id)).user_id;
    ids := lineage.blob_id || coalesce(ids, '{}');
    depths := 0 || coalesce(depths, '{}');
    RETURN jsonb_build_object(
        'nodes', (SELECT jsonb_agg(jsonb_build_object(
                             'blob_id', b.id, 'depth', n.depth, 'version', b.version,
                             'content_type', b.content_type, 'created_by', b.created_by,
                             'deleted', b.deleted_at IS NOT NULL)
                         ORDER BY n.depth, b.id)
                  FROM unnest(ids, depths) n(id, depth)
                  JOIN memmie.blobs b ON b.id = n.id AND b.user_id = u),
        'edges', coalesce((SELECT jsonb_agg(jsonb_build_object(
                                     'parent_blob_id', e.parent_blob_id,
                                     'child_blob_id', e.child_blob_id,
                                     'provider_id', e.provider_id,
                                     'transform_type', e.transform_type,
                                     'version_map', e.version_map)
                                 ORDER BY e.parent_blob_id, e.child_blob_id, e.provider_id)
                           FROM memmie.blob_edges e
                           WHERE e.user_id = u
                             AND e.parent_blob_id = ANY (ids)
                             AND e.child_blob_id = ANY (ids)), '[]'));
END
$$;

-- ---------------------------------------------------------------------------------------------
-- Access levels on a Citus cluster (issue 16): the policies distribute() writes read nothing
-- distributed on a shard (_unrestricted_on_node: the admin level from the node's own placement
-- of grantees, kept for the rest of the command), and the functions' grants reach every node
-- (memmie's functions are not Citus distributed objects: a trigger distribute() puts on
-- grantees, a reference table, grants them on each node's placement in the same transaction).
-- Before the privileges below. (distribute(), which it also changed, is defined once, with the
-- other concerns' changes, in the counting section below.)

CREATE FUNCTION memmie."_unrestricted_on_node"() RETURNS boolean
STRICT STABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'unrestricted_on_node_wrapper';

CREATE OR REPLACE FUNCTION memmie._unrestricted_node_check() RETURNS boolean
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    caller oid := memmie._caller();
    shard  text;
    ok     boolean;
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_extension e
               WHERE e.extname OPERATOR(pg_catalog.=) 'memmie'
                 AND pg_catalog.pg_has_role(caller, e.extowner, 'USAGE')) THEN
        RETURN true;
    END IF;
    IF NOT memmie._distributed() THEN
        RETURN memmie._unrestricted();
    END IF;
    SELECT pg_catalog.format('memmie.%I', 'grantees_' OPERATOR(pg_catalog.||) s.shardid) INTO shard
    FROM pg_catalog.pg_dist_shard s
    JOIN pg_catalog.pg_dist_placement p ON p.shardid OPERATOR(pg_catalog.=) s.shardid
    WHERE s.logicalrelid OPERATOR(pg_catalog.=) 'memmie.grantees'::pg_catalog.regclass
      AND p.groupid OPERATOR(pg_catalog.=) (SELECT l.groupid FROM pg_catalog.pg_dist_local_group l);
    IF shard IS NULL THEN
        RETURN memmie._unrestricted();
    END IF;
    EXECUTE pg_catalog.format(
        'SELECT EXISTS (SELECT FROM %s g JOIN pg_catalog.pg_roles r ON r.rolname OPERATOR(pg_catalog.=) g.role_name'
        ' WHERE g.level OPERATOR(pg_catalog.=) ''admin'' AND pg_catalog.pg_has_role($1, r.oid, ''USAGE''))', shard)
        INTO ok USING caller;
    RETURN ok;
END
$$;

CREATE OR REPLACE FUNCTION memmie._level_function_names(p_level text) RETURNS text[]
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT ARRAY['current_user_id', 'access_levels', '_bound_user', '_unrestricted', '_caller',
                 '_unrestricted_on_node', '_unrestricted_node_check']
        || CASE p_level
        WHEN 'app' THEN ARRAY[
            'create_blob', 'create_external_blob', 'apply_delta', 'update_content',
            'update_external_content', 'revert_blob', 'delete_blob', 'undelete_blob', 'squash_history',
            'blob_state', 'blob_content', 'blob_history', 'find_blobs', 'get_content',
            'derive_blob', 'add_edge', 'ancestors', 'descendants', 'lineage', 'dag_stats',
            'user_usage', 'enqueue_job', 'cancel_job', 'record_api_call']
        WHEN 'worker' THEN ARRAY[
            'events_since', 'dispatch_events', 'claim_jobs', 'heartbeat_job', 'complete_job',
            'fail_job', 'complete_processing', 'fail_processing', 'processing_input',
            'pending_work']
        WHEN 'admin' THEN ARRAY[
            'register_provider', 'set_provider_status', 'backfill', 'reprocess',
            'maintenance', 'check', 'gc_content', 'put_content', 'verify_content',
            'create_partitions', 'drop_old_partitions', 'ensure_partitions', 'fold_usage',
            'rollup_metrics', 'refresh_views', 'refresh_user_blob_summary',
            'schedule_maintenance', 'unschedule_maintenance', 'user_usage', 'cancel_job',
            'set_quota', 'distribute']
        END
$$;

CREATE OR REPLACE FUNCTION memmie._grant_functions(p_role name, p_levels text[]) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    lvl text;
    f   regprocedure;
BEGIN
    FOREACH lvl IN ARRAY coalesce(p_levels, '{}') LOOP
        FOR f IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
                 WHERE p.pronamespace = 'memmie'::regnamespace
                   AND p.proname = ANY (memmie._level_function_names(lvl)) LOOP
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', f, p_role);
        END LOOP;
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION memmie._revoke_functions(p_role name) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    EXECUTE format('REVOKE ALL ON ALL FUNCTIONS IN SCHEMA memmie FROM %I', p_role);
END
$$;

CREATE OR REPLACE FUNCTION memmie._grantees_on_node() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF EXISTS (SELECT FROM pg_catalog.pg_roles r WHERE r.rolname = OLD.role_name) THEN
            PERFORM memmie._revoke_functions(OLD.role_name);
        END IF;
        RETURN OLD;
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles r WHERE r.rolname = NEW.role_name) THEN
        PERFORM memmie._grant_functions(NEW.role_name, ARRAY[NEW.level]);
    END IF;
    RETURN NEW;
END
$$;

CREATE OR REPLACE FUNCTION memmie._apply_grants(p_role name) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    lvl    text;
    levels text[];
    t      text;
    dist   boolean := memmie._distributed();
BEGIN
    IF dist THEN
        -- GRANTs on distributed and reference tables and a write to grantees in one
        -- transaction: one connection per node
        PERFORM set_config('citus.multi_shard_modify_mode', 'sequential', true);
    END IF;
    EXECUTE format('GRANT USAGE ON SCHEMA memmie TO %I', p_role);
    SELECT array_agg(g.level ORDER BY g.level) INTO levels FROM memmie.grantees g WHERE g.role_name = p_role;
    PERFORM memmie._grant_functions(p_role, levels);
    FOREACH lvl IN ARRAY coalesce(levels, '{}') LOOP
        FOREACH t IN ARRAY memmie._level_table_names(lvl) LOOP
            EXECUTE format('GRANT SELECT ON TABLE memmie.%I TO %I', t, p_role);
        END LOOP;
    END LOOP;
    IF dist THEN
        UPDATE memmie.grantees g SET granted_at = g.granted_at WHERE g.role_name = p_role;
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION memmie.revoke_access(role regrole) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n name := memmie._role_name(revoke_access.role);
BEGIN
    IF memmie._distributed() THEN
        PERFORM set_config('citus.multi_shard_modify_mode', 'sequential', true);
    END IF;
    -- on a Citus cluster the trigger on grantees revokes the functions on every node
    DELETE FROM memmie.grantees g WHERE g.role_name = n;
    PERFORM memmie._revoke_functions(n);
    EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA memmie FROM %I', n);
    EXECUTE format('REVOKE ALL ON ALL SEQUENCES IN SCHEMA memmie FROM %I', n);
    EXECUTE format('REVOKE ALL ON SCHEMA memmie FROM %I', n);
END
$$;

-- ---------------------------------------------------------------------------------------------
-- Routing (issue 16): every lock, UPDATE and DELETE of a blob, job or processing by its id also
-- names its user_id (one shard on a Citus cluster); joins between tenant tables have user_id
-- equality; no volatile function (and no stable one of a column, in a CASE or COALESCE) in an
-- UPDATE's SET; enqueue_job without a conflict target; hard delete_blob clears output_blob_id on
-- a cluster; pending_work in PL/pgSQL; fold_usage one user at a time on a cluster; distribute()
-- puts a row-level cancel_orphan_job in place of the statement trigger.
DROP FUNCTION memmie._lock_job(text);
DROP FUNCTION memmie._complete_job(text, text, jsonb, boolean);

-- The blob, locked, after its user's row: P0002 when it does not exist or is not of user
-- p_scope (the user a call is confined to, memmie._scope(); NULL: any user).
CREATE OR REPLACE FUNCTION memmie._lock_blob(p_blob uuid, p_scope uuid) RETURNS memmie.blobs
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    b memmie.blobs;
BEGIN
    PERFORM memmie._require(p_blob, 'blob_id');
    -- the user first (one shard when the scope names it), without a lock: the user's row is
    -- locked before the blob's
    IF p_scope IS NULL THEN
        SELECT * INTO b FROM memmie.blobs WHERE id = p_blob;
    ELSE
        SELECT * INTO b FROM memmie.blobs WHERE id = p_blob AND user_id = p_scope;
    END IF;
    IF FOUND THEN
        PERFORM memmie._lock_user(b.user_id);
        SELECT * INTO b FROM memmie.blobs WHERE id = p_blob AND user_id = b.user_id FOR NO KEY UPDATE;
    END IF;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'blob % does not exist', p_blob USING ERRCODE = 'P0002';
    END IF;
    RETURN b;
END
$$;

-- P0002 unless delta p_delta (when given) exists and is of user p_scope (any user: NULL).
CREATE OR REPLACE FUNCTION memmie._check_delta_exists(p_delta uuid, p_scope uuid) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF p_delta IS NOT NULL THEN
        -- (two statements: with a scope, one shard on a Citus cluster)
        IF p_scope IS NULL THEN
            PERFORM 1 FROM memmie.deltas x WHERE x.id = p_delta;
        ELSE
            PERFORM 1 FROM memmie.deltas x WHERE x.id = p_delta AND x.user_id = p_scope;
        END IF;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'delta % does not exist', p_delta USING ERRCODE = 'P0002';
        END IF;
    END IF;
END
$$;

-- The blob, when this call may see it; P0002 as for a blob that does not exist otherwise.
CREATE OR REPLACE FUNCTION memmie._visible_blob(p_blob uuid) RETURNS memmie.blobs
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    scope uuid := memmie._scope();
    b     memmie.blobs;
BEGIN
    PERFORM memmie._require(p_blob, 'blob_id');
    -- two statements, not (scope IS NULL OR user_id = scope): with the user bound, a Citus
    -- cluster reads one shard
    IF scope IS NULL THEN
        SELECT * INTO b FROM memmie.blobs x WHERE x.id = p_blob;
    ELSE
        SELECT * INTO b FROM memmie.blobs x WHERE x.id = p_blob AND x.user_id = scope;
    END IF;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'blob % does not exist', p_blob USING ERRCODE = 'P0002';
    END IF;
    RETURN b;
END
$$;

-- Records version b.version of blob b (whose head row is already written): its blob_versions
-- row, its delta and its event. Returns the delta.
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
        WHERE v.blob_id = b.id AND v.version = b.version - 1 AND v.user_id = b.user_id;
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
        WHERE x.id = p_pending_delta AND x.blob_id = b.id AND x.user_id = b.user_id
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

-- Writes state s as the next version of blob b: the head row, then _record_version.
CREATE OR REPLACE FUNCTION memmie._write_state(b memmie.blobs, s jsonb, p_operation text, p_patch jsonb,
                                    p_provider text, p_caused_by uuid DEFAULT NULL,
                                    p_caused_event jsonb DEFAULT NULL,
                                    p_pending_delta uuid DEFAULT NULL)
RETURNS memmie.deltas
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    nb         memmie.blobs;
    event_type text := 'blob.updated';
    d          memmie.deltas;
    interval_  int;
    -- (computed here: Citus refuses a non-immutable function in a CASE in an UPDATE's SET)
    deleted    timestamptz := CASE WHEN s ? 'deleted' THEN coalesce(b.deleted_at, CURRENT_TIMESTAMP) END;
BEGIN
    UPDATE memmie.blobs
    SET content_hash = s ->> 'content_hash',
        content_size = (s ->> 'content_size')::bigint,
        content_type = s ->> 'content_type',
        metadata     = s -> 'metadata',
        tags         = ARRAY(SELECT jsonb_array_elements_text(s -> 'tags')),
        version      = b.version + 1,
        deleted_at   = deleted
    WHERE id = b.id AND user_id = b.user_id
    RETURNING * INTO nb;
    IF nb.deleted_at IS NOT NULL AND b.deleted_at IS NULL THEN
        event_type := 'blob.deleted';
    END IF;
    d := memmie._record_version(nb, p_operation, p_patch, p_provider, p_caused_by,
                                p_caused_event, event_type, p_pending_delta);
    -- every snapshot_interval-th version keeps its whole state: replay starts there (blob_state)
    interval_ := memmie._snapshot_interval();
    IF interval_ > 0 AND nb.version % interval_ = 0 THEN
        INSERT INTO memmie.blob_snapshots (blob_id, version, user_id, state) VALUES (nb.id, nb.version, nb.user_id, s);
    END IF;
    RETURN d;
END
$$;

-- Writes new content (and type, metadata, tags, when given) as the next version of blob b
-- (locked, live): p_content, or, with p_external, content kept outside PostgreSQL.
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
    SELECT * INTO b FROM memmie.blobs x WHERE x.id = b.id AND x.user_id = b.user_id;
    RETURN b;
END
$$;

CREATE OR REPLACE FUNCTION memmie.revert_blob(blob_id uuid, to_version int, provider_id text DEFAULT 'user',
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
    b := memmie._lock_blob(revert_blob.blob_id, memmie._scope());
    PERFORM memmie._check_expected(b, revert_blob.expected_version);
    SELECT * INTO v FROM memmie.blob_versions x
    WHERE x.blob_id = b.id AND x.version = revert_blob.to_version AND x.user_id = b.user_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'blob % has no version %', b.id, revert_blob.to_version USING ERRCODE = 'P0002';
    END IF;
    old_s := memmie._head_state(b);
    new_s := memmie._make_state(v.content_hash, v.content_size, v.content_type, v.metadata, v.tags,
                                v.deleted);
    PERFORM memmie._write_state(b, new_s, 'revert', memmie.jsonb_diff(old_s, new_s), p_by);
    PERFORM memmie._check_quotas(b.user_id);
    SELECT * INTO b FROM memmie.blobs x WHERE x.id = b.id AND x.user_id = b.user_id;
    RETURN b;
END
$$;

CREATE OR REPLACE FUNCTION memmie.delete_blob(blob_id uuid, hard boolean DEFAULT false,
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
    b := memmie._lock_blob(delete_blob.blob_id, memmie._scope());
    PERFORM memmie._check_expected(b, delete_blob.expected_version);
    IF delete_blob.hard THEN
        INSERT INTO memmie.events (event_type, aggregate_id, aggregate_type, user_id, payload, created_at)
        VALUES ('blob.deleted', b.id, 'blob', b.user_id,
                jsonb_build_object('blob_id', b.id, 'version', b.version, 'delta_id', NULL,
                                   'operation', 'delete', 'content_type', b.content_type,
                                   'created_by', b.created_by, 'hard', true), clock_timestamp())
        RETURNING id INTO event_id;
        PERFORM pg_notify('memmie_events', event_id::text);
        IF memmie._distributed() THEN
            -- on the cluster processings keep output_blob_id without its foreign key (Citus
            -- refuses ON DELETE SET NULL with the distribution column): cleared here
            UPDATE memmie.provider_processing x SET output_blob_id = NULL
            WHERE x.user_id = b.user_id AND x.output_blob_id = b.id;
        END IF;
        DELETE FROM memmie.blobs x WHERE x.id = b.id AND x.user_id = b.user_id;
        INSERT INTO memmie.usage_increments (user_id, storage_bytes_used)
        SELECT b.user_id, u.storage_used FROM memmie._user_counts(b.user_id) u WHERE u.storage_used IS NOT NULL;
    ELSIF b.deleted_at IS NULL THEN
        PERFORM memmie._write_state(b, memmie._head_state(b) || '{"deleted": true}', 'delete',
                                    '[{"op": "add", "path": "/deleted", "value": true}]',
                                    'user');
        -- Blobs derived from it stay live and listed, unless the provider that derived one has
        -- processing_rules.delete_with_parent: those are soft-deleted with it (and theirs in
        -- turn). undelete_blob brings back only the blob it is given.
        -- (the edges' children as a list, then the live ones among the user's blobs: one shard
        -- on a Citus cluster, where blobs cannot be joined with the edges on a blob id)
        FOR child IN
            SELECT c.id
            FROM memmie.blobs c
            WHERE c.user_id = b.user_id AND c.deleted_at IS NULL
              AND c.id = ANY (ARRAY(SELECT e.child_blob_id
                                    FROM memmie.blob_edges e
                                    JOIN memmie.providers p ON p.id = e.provider_id
                                    WHERE e.parent_blob_id = b.id AND e.user_id = b.user_id
                                      AND (p.processing_rules ->> 'delete_with_parent')::boolean IS TRUE))
            ORDER BY c.id
        LOOP
            PERFORM memmie.delete_blob(child);
        END LOOP;
    END IF;
END
$$;

-- Brings a soft-deleted blob back: a new version whose state is the deleted one's without
-- "deleted" (the state before the soft delete), recorded as a revert (event blob.updated, as a
-- revert_blob to a live version); counted and quota-checked as every writer is.
CREATE OR REPLACE FUNCTION memmie.undelete_blob(blob_id uuid, expected_version int DEFAULT NULL)
RETURNS memmie.blobs
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    b     memmie.blobs := memmie._lock_blob(undelete_blob.blob_id, memmie._scope());
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
    SELECT * INTO b FROM memmie.blobs x WHERE x.id = b.id AND x.user_id = b.user_id;
    RETURN b;
END
$$;

-- The state of version v of blob b (P0002 when it has no such version), replayed from the
-- nearest kept state at or below it (blob_snapshots; from null when there is none): at most
-- snapshot_interval - 1 deltas, however long the history. blob_state is it for a visible blob.
CREATE OR REPLACE FUNCTION memmie._state_of(b memmie.blobs, v int) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    snap memmie.blob_snapshots;
    s    jsonb;
BEGIN
    -- (versions before a squash_history are gone)
    IF NOT EXISTS (SELECT 1 FROM memmie.blob_versions x
                   WHERE x.blob_id = b.id AND x.version = v AND x.user_id = b.user_id) THEN
        RAISE EXCEPTION 'blob % has no version %', b.id, v USING ERRCODE = 'P0002';
    END IF;
    SELECT * INTO snap FROM memmie.blob_snapshots x
    WHERE x.blob_id = b.id AND x.user_id = b.user_id AND x.version <= v ORDER BY x.version DESC LIMIT 1;
    IF snap.state IS NULL THEN
        SELECT memmie._replay(array_agg(d.patch::text ORDER BY d.to_version))::jsonb INTO s
        FROM memmie.deltas d
        WHERE d.blob_id = b.id AND d.user_id = b.user_id AND d.status = 'applied' AND d.to_version <= v;
    ELSE
        SELECT memmie._replay_from(snap.state, coalesce(array_agg(d.patch::text ORDER BY d.to_version), '{}'))
        INTO s
        FROM memmie.deltas d
        WHERE d.blob_id = b.id AND d.user_id = b.user_id AND d.status = 'applied' AND d.to_version > snap.version
          AND d.to_version <= v;
    END IF;
    RETURN s;
END
$$;

CREATE OR REPLACE FUNCTION memmie.blob_content(blob_id uuid, version int DEFAULT NULL) RETURNS bytea
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    b memmie.blobs := memmie._visible_blob(blob_content.blob_id);
    h text;
BEGIN
    SELECT v.content_hash INTO h
    FROM memmie.blob_versions v
    WHERE v.blob_id = b.id AND v.user_id = b.user_id
      AND v.version = coalesce(blob_content.version, b.version);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'blob % has no version %', blob_content.blob_id,
            coalesce(blob_content.version::text, '(latest)') USING ERRCODE = 'P0002';
    END IF;
    RETURN memmie.get_content(h);
END
$$;

CREATE OR REPLACE FUNCTION memmie.blob_history(blob_id uuid) RETURNS SETOF memmie.deltas
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    b memmie.blobs := memmie._visible_blob(blob_history.blob_id);
BEGIN
    RETURN QUERY SELECT * FROM memmie.deltas d WHERE d.blob_id = b.id AND d.user_id = b.user_id
                 ORDER BY d.to_version, d.created_at;
END
$$;

-- Compacts a blob's history: the versions older than before_version are removed (their
-- blob_versions rows, and with them their content references and snapshots; their deltas), and
-- the state of before_version, kept whole in blob_snapshots, is the base replay starts from.
-- Later versions keep their states and numbers. Returns how many versions were removed (0 when
-- none is older than before_version: a squash already done). Event blob.squashed.
-- (the work, for the blobs of user p_scope, or of any user when it is NULL: maintenance())
CREATE OR REPLACE FUNCTION memmie._squash_history(p_blob uuid, p_before int, p_expected int, p_scope uuid)
RETURNS int
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    b        memmie.blobs;
    base     int;
    n        int;
    event_id uuid;
BEGIN
    PERFORM memmie._require(p_before, 'before_version');
    b := memmie._lock_blob(p_blob, p_scope);
    PERFORM memmie._check_live(b);
    PERFORM memmie._check_expected(b, p_expected);
    IF p_before < 1 OR p_before > b.version THEN
        RAISE EXCEPTION 'before_version must be between 1 and the version of blob % (%), got %',
            b.id, b.version, p_before USING ERRCODE = '22023';
    END IF;
    SELECT min(x.version) INTO base FROM memmie.blob_versions x WHERE x.blob_id = b.id AND x.user_id = b.user_id;
    IF p_before <= base THEN
        RETURN 0;
    END IF;
    -- the new base keeps its state whole (it may be a snapshot already)
    INSERT INTO memmie.blob_snapshots (blob_id, version, user_id, state)
    VALUES (b.id, p_before, b.user_id, memmie._state_of(b, p_before))
    ON CONFLICT ON CONSTRAINT blob_snapshots_pkey DO NOTHING;
    DELETE FROM memmie.blob_versions x WHERE x.blob_id = b.id AND x.user_id = b.user_id AND x.version < p_before;
    GET DIAGNOSTICS n = ROW_COUNT;
    DELETE FROM memmie.deltas d WHERE d.blob_id = b.id AND d.user_id = b.user_id AND d.to_version < p_before;
    INSERT INTO memmie.events (event_type, aggregate_id, aggregate_type, user_id, payload, created_at)
    VALUES ('blob.squashed', b.id, 'blob', b.user_id,
            jsonb_build_object('blob_id', b.id, 'version', b.version, 'delta_id', NULL,
                               'operation', 'squash', 'content_type', b.content_type,
                               'created_by', 'user', 'before_version', p_before,
                               'versions_removed', n), clock_timestamp())
    RETURNING id INTO event_id;
    PERFORM pg_notify('memmie_events', event_id::text);
    -- the day's usage, with the user's storage after the squash (as a hard delete records it)
    INSERT INTO memmie.usage_increments (user_id, storage_bytes_used)
    SELECT b.user_id, u.storage_used FROM memmie.user_contexts u WHERE u.user_id = b.user_id;
    RETURN n;
END
$$;

-- The job, row-locked; P0002 when it does not exist (or is not of user p_user, when given).
-- Locked by (id, user_id), one shard on a Citus cluster: without p_user, the job's user is read
-- first, without a lock. Where Citus is not installed (to_regclass(), a catalog cache lookup)
-- a job without p_user is locked by its id alone, one statement as before.
CREATE OR REPLACE FUNCTION memmie._lock_job(p_job text, p_user uuid DEFAULT NULL) RETURNS memmie.jobs
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j memmie.jobs;
BEGIN
    PERFORM memmie._require(p_job, 'job_id');
    IF p_user IS NULL AND pg_catalog.to_regclass('pg_catalog.pg_dist_partition') IS NULL THEN
        SELECT * INTO j FROM memmie.jobs x WHERE x.id = p_job FOR UPDATE;
    ELSE
        IF p_user IS NULL THEN
            SELECT x.user_id INTO p_user FROM memmie.jobs x WHERE x.id = p_job;
        END IF;
        SELECT * INTO j FROM memmie.jobs x WHERE x.id = p_job AND x.user_id = p_user FOR UPDATE;
    END IF;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'job % does not exist', p_job USING ERRCODE = 'P0002';
    END IF;
    RETURN j;
END
$$;

CREATE OR REPLACE FUNCTION memmie.enqueue_job(job_type text, user_id uuid, input jsonb, max_retries int DEFAULT 3,
                                   expires_at timestamptz DEFAULT NULL, job_id text DEFAULT NULL)
RETURNS memmie.jobs
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    j memmie.jobs;
BEGIN
    PERFORM memmie._check_text(enqueue_job.job_type, 'job_type', 100);
    PERFORM memmie._acting_user(enqueue_job.user_id);
    PERFORM memmie._require(enqueue_job.input, 'input');
    IF enqueue_job.max_retries IS NULL OR enqueue_job.max_retries < 0 THEN
        RAISE EXCEPTION 'max_retries must be 0 or more, got %', enqueue_job.max_retries USING ERRCODE = '22023';
    END IF;
    IF enqueue_job.job_id IS NOT NULL THEN
        PERFORM memmie._check_text(enqueue_job.job_id, 'job_id', 255);
    END IF;
    INSERT INTO memmie.user_contexts (user_id) VALUES (enqueue_job.user_id) ON CONFLICT DO NOTHING;
    -- A job id is unique: on a single node the primary key (id) says so. On a Citus cluster the
    -- key is (id, user_id) (distribute()), so an id the caller chooses is first looked for among
    -- the other users' jobs (every shard; two users enqueueing the same new id at the same
    -- moment are not caught there). Generated ids (uuids) need no look.
    IF enqueue_job.job_id IS NOT NULL AND memmie._distributed()
       AND EXISTS (SELECT 1 FROM memmie.jobs x
                   WHERE x.id = enqueue_job.job_id AND x.user_id <> enqueue_job.user_id) THEN
        RAISE EXCEPTION 'job id % is already in use', enqueue_job.job_id USING ERRCODE = '23505';
    END IF;
    -- (no conflict target: the key is (id) on a single node, (id, user_id) on a cluster)
    INSERT INTO memmie.jobs (id, job_type, user_id, input, max_retries, expires_at)
    VALUES (coalesce(enqueue_job.job_id, gen_random_uuid()::text), enqueue_job.job_type,
            enqueue_job.user_id, enqueue_job.input, enqueue_job.max_retries, enqueue_job.expires_at)
    ON CONFLICT DO NOTHING
    RETURNING * INTO j;
    IF FOUND THEN
        PERFORM pg_notify('memmie_jobs', j.job_type);
    ELSE
        -- idempotent: the job with this id exists already (when it is this user's)
        SELECT * INTO j FROM memmie.jobs x WHERE x.id = enqueue_job.job_id AND x.user_id = enqueue_job.user_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'job id % is already in use', enqueue_job.job_id USING ERRCODE = '23505';
        END IF;
    END IF;
    RETURN j;
END
$$;

CREATE OR REPLACE FUNCTION memmie.heartbeat_job(job_id text, worker_id text, progress int DEFAULT NULL)
RETURNS memmie.jobs
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    j     memmie.jobs := memmie._lock_job(heartbeat_job.job_id);
    t_now timestamptz;
BEGIN
    PERFORM memmie._check_lease(j, heartbeat_job.worker_id);
    IF heartbeat_job.progress IS NOT NULL AND heartbeat_job.progress NOT BETWEEN 0 AND 100 THEN
        RAISE EXCEPTION 'progress must be between 0 and 100, got %', heartbeat_job.progress USING ERRCODE = '22023';
    END IF;
    -- the times first (j is locked): Citus refuses a volatile function in a distributed
    -- UPDATE's SET, and a stable one (timestamptz + interval) applied to a column
    t_now := clock_timestamp();
    UPDATE memmie.jobs x
    SET lease_expires_at = t_now + j.lease_duration, heartbeat_at = t_now,
        progress = coalesce(heartbeat_job.progress, x.progress)
    WHERE x.id = j.id AND x.user_id = j.user_id
    RETURNING * INTO j;
    RETURN j;
END
$$;

-- Completes the job if p_worker holds it and it is (p_processing) or is not a provider
-- processing; the completed row, or NULL when nothing matched. p_user: the job's user when the
-- caller knows it. Without it, a single node updates by id alone (one statement: the hot path
-- of complete_job); a Citus cluster reads the job's user first, so that the UPDATE goes to one
-- shard. (Whether Citus is there at all is asked first: to_regclass() is a catalog cache
-- lookup, a fraction of memmie._distributed()'s query, which a single node then never runs.)
CREATE OR REPLACE FUNCTION memmie._complete_job(p_job text, p_worker text, p_output jsonb, p_processing boolean,
                                     p_user uuid DEFAULT NULL)
RETURNS memmie.jobs
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j     memmie.jobs;
    -- the time first: Citus refuses a volatile function in a distributed UPDATE's SET
    t_now timestamptz := clock_timestamp();
BEGIN
    IF p_user IS NULL THEN
        IF pg_catalog.to_regclass('pg_catalog.pg_dist_partition') IS NULL OR NOT memmie._distributed() THEN
            UPDATE memmie.jobs x
            SET status = 'completed', output = p_output, progress = 100, completed_at = t_now,
                lease_expires_at = NULL, error_message = NULL
            WHERE x.id = p_job AND x.status = 'running' AND x.worker_id = p_worker
              AND (x.job_type = 'memmie.process') = p_processing
            RETURNING * INTO j;
            RETURN j;
        END IF;
        SELECT x.user_id INTO p_user FROM memmie.jobs x WHERE x.id = p_job;
        IF NOT FOUND THEN
            RETURN j;
        END IF;
    END IF;
    UPDATE memmie.jobs x
    SET status = 'completed', output = p_output, progress = 100, completed_at = t_now,
        lease_expires_at = NULL, error_message = NULL
    WHERE x.id = p_job AND x.user_id = p_user AND x.status = 'running' AND x.worker_id = p_worker
      AND (x.job_type = 'memmie.process') = p_processing
    RETURNING * INTO j;
    RETURN j;
END
$$;

CREATE OR REPLACE FUNCTION memmie.complete_job(job_id text, worker_id text, output jsonb DEFAULT NULL)
RETURNS memmie.jobs
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    j memmie.jobs;
BEGIN
    -- the common case in one statement: the holder completes its job
    j := memmie._complete_job(complete_job.job_id, complete_job.worker_id, complete_job.output, false);
    IF j.id IS NOT NULL THEN
        RETURN j;
    END IF;
    -- otherwise say why (or, if the job changed meanwhile, complete it after all)
    j := memmie._lock_job(complete_job.job_id);
    PERFORM memmie._check_lease(j, complete_job.worker_id);
    IF j.job_type = 'memmie.process' THEN
        RAISE EXCEPTION 'job % is a provider processing: finish it with complete_processing()', j.id
            USING ERRCODE = '22023';
    END IF;
    RETURN memmie._complete_job(j.id, complete_job.worker_id, complete_job.output, false, j.user_id);
END
$$;

CREATE OR REPLACE FUNCTION memmie.fail_job(job_id text, worker_id text, error text, retryable boolean DEFAULT true)
RETURNS memmie.jobs
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    j     memmie.jobs := memmie._lock_job(fail_job.job_id);
    t_now timestamptz;
BEGIN
    PERFORM memmie._check_lease(j, fail_job.worker_id);
    PERFORM memmie._require(fail_job.error, 'error');
    PERFORM memmie._require(fail_job.retryable, 'retryable');
    -- retry after 1, 2, 4, ... seconds (at most an hour) while attempts are left (the times
    -- first, j is locked: Citus refuses a volatile function in a distributed UPDATE's SET, and a
    -- stable one (timestamptz + interval) applied to a column)
    t_now := clock_timestamp();
    UPDATE memmie.jobs x
    SET status = CASE WHEN fail_job.retryable AND x.retry_count < x.max_retries THEN 'queued' ELSE 'failed' END,
        run_after = t_now + least(power(2, j.retry_count), 3600) * interval '1 second',
        completed_at = CASE WHEN fail_job.retryable AND x.retry_count < x.max_retries THEN NULL
                            ELSE t_now END,
        retry_count = CASE WHEN fail_job.retryable AND x.retry_count < x.max_retries THEN x.retry_count + 1
                           ELSE x.retry_count END,
        error_message = fail_job.error, worker_id = NULL, lease_expires_at = NULL
    WHERE x.id = j.id AND x.user_id = j.user_id
    RETURNING * INTO j;
    RETURN j;
END
$$;

CREATE OR REPLACE FUNCTION memmie.cancel_job(job_id text) RETURNS memmie.jobs
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    scope uuid := memmie._scope();
    j     memmie.jobs;
    -- (a variable: Citus refuses a volatile function in a distributed UPDATE's SET)
    t_now timestamptz := clock_timestamp();
BEGIN
    -- another user's job is not visible here: the same answer as a missing one (_lock_job with
    -- the scope)
    j := memmie._lock_job(cancel_job.job_id, scope);
    IF j.status IN ('queued', 'running') THEN
        UPDATE memmie.jobs x
        SET status = 'cancelled', completed_at = t_now, worker_id = NULL,
            lease_expires_at = NULL
        WHERE x.id = j.id AND x.user_id = j.user_id
        RETURNING * INTO j;
    END IF;
    RETURN j;
END
$$;

-- What is left to do, for a worker deciding whether it is idle: events not dispatched yet, and
-- jobs queued or running (of job_type when given). Counts only: no user's data. PL/pgSQL: a
-- LANGUAGE sql function whose parameter filters a distributed table cannot be planned by Citus.
CREATE OR REPLACE FUNCTION memmie.pending_work(job_type text DEFAULT NULL)
RETURNS TABLE (undispatched_events bigint, open_jobs bigint)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT (SELECT count(*) FROM memmie.events e WHERE NOT e.processed),
           (SELECT count(*) FROM memmie.jobs j
            WHERE j.status IN ('queued', 'running')
              AND (pending_work.job_type IS NULL OR j.job_type = pending_work.job_type));
END
$$;

-- A processing that disappears (its blob hard-deleted, directly or by a cascade) cancels its
-- job, so that no worker claims work nobody can complete.
CREATE OR REPLACE FUNCTION memmie._cancel_orphan_jobs() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t_now timestamptz := clock_timestamp();
BEGIN
    UPDATE memmie.jobs j
    SET status = 'cancelled', completed_at = t_now, worker_id = NULL, lease_expires_at = NULL,
        -- (not format(): Citus refuses a stable function of a column in a distributed UPDATE)
        error_message = 'processing of blob ' || o.blob_id::text || ' was deleted'
    FROM memmie_old o
    WHERE j.id = o.id::text AND j.user_id = o.user_id AND j.status IN ('queued', 'running');
    RETURN NULL;
END
$$;

-- The same for one row: on a Citus cluster a trigger runs on the shard, where transition tables
-- do not exist, so distribute() puts this row trigger (cancel_orphan_job) in the statement
-- trigger's place. The job has the processing's user: its UPDATE goes to the co-located shard.
CREATE OR REPLACE FUNCTION memmie._cancel_orphan_job() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t_now timestamptz := clock_timestamp();
BEGIN
    UPDATE memmie.jobs j
    SET status = 'cancelled', completed_at = t_now, worker_id = NULL, lease_expires_at = NULL,
        error_message = 'processing of blob ' || OLD.blob_id::text || ' was deleted'
    WHERE j.id = OLD.id::text AND j.user_id = OLD.user_id AND j.status IN ('queued', 'running');
    RETURN NULL;
END
$$;

-- A processing follows its job: claimed -> processing, retried -> pending, failed, cancelled
-- -> skipped. (Completion is written by complete_processing itself.)
-- A running attempt that ends in a retry or a failure is a failed invocation of the provider:
-- it is counted in the user's usage with the time it took (sql/metrics.sql).
-- The trigger's WHEN clause only picks the processings' jobs; the rest of the condition is
-- here: a WHEN clause is read back from the catalog and planned by every UPDATE of jobs, so
-- every claim and completion of every other job would pay for a longer one.
CREATE OR REPLACE FUNCTION memmie._sync_processing() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    pr memmie.provider_processing;
    ms bigint;
BEGIN
    IF OLD.status IS NOT DISTINCT FROM NEW.status OR NEW.status = 'completed' THEN
        RETURN NULL;
    END IF;
    ms := CASE WHEN OLD.status = 'running' AND NEW.status IN ('queued', 'failed')
               THEN greatest(0, extract(epoch FROM clock_timestamp() - OLD.started_at) * 1000)::bigint END;
    UPDATE memmie.provider_processing pp
    SET status = CASE NEW.status WHEN 'running' THEN 'processing' WHEN 'queued' THEN 'pending'
                                 WHEN 'cancelled' THEN 'skipped' ELSE NEW.status END,
        started_at = CASE WHEN NEW.status = 'running' THEN NEW.started_at ELSE pp.started_at END,
        attempt_count = pp.attempt_count + (NEW.status = 'running')::int,
        error_message = CASE WHEN NEW.status = 'running' THEN pp.error_message ELSE NEW.error_message END,
        completed_at = CASE WHEN NEW.status IN ('failed', 'cancelled') THEN NEW.completed_at END,
        processing_time_ms = CASE WHEN NEW.status = 'failed' THEN ms ELSE pp.processing_time_ms END
    WHERE pp.id = NEW.id::uuid AND pp.user_id = NEW.user_id
    RETURNING * INTO pr;
    IF ms IS NOT NULL AND pr.id IS NOT NULL THEN
        INSERT INTO memmie.usage_increments (user_id, provider_id, provider_invocations, processing_time_ms)
        VALUES (pr.user_id, pr.provider_id, 1, ms);
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION memmie.backfill(provider_id text) RETURNS int
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    p         memmie.providers := memmie._require_provider(backfill.provider_id);
    blobs     uuid[];
    providers text[];
    metadata  jsonb[];
    ids       uuid[];
BEGIN
    IF p.status <> 'active' THEN
        RAISE EXCEPTION 'provider % is %, not active', p.id, p.status USING ERRCODE = '22023';
    END IF;
    SELECT array_agg(b.id), array_agg(p.id::text), array_agg('{"backfill": true}'::jsonb)
    INTO blobs, providers, metadata
    FROM memmie.blobs b
    JOIN memmie.blob_versions v ON v.blob_id = b.id AND v.version = b.version AND v.user_id = b.user_id
    WHERE b.deleted_at IS NULL AND memmie._matches(p, b, v);
    ids := memmie._queue_processing(blobs, providers, metadata);
    RETURN cardinality(ids);
END
$$;

CREATE OR REPLACE FUNCTION memmie.reprocess(blob_id uuid, provider_id text) RETURNS uuid
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    p     memmie.providers := memmie._require_provider(reprocess.provider_id);
    b     memmie.blobs;
    pr    memmie.provider_processing;
    ids   uuid[];
    t_now timestamptz;
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
    WHERE x.blob_id = b.id AND x.user_id = b.user_id AND x.provider_id = p.id
      AND x.processed_version = b.version;
    PERFORM memmie._lock_job(pr.job_id, pr.user_id);
    -- (the time in a variable: Citus refuses a volatile function in a distributed UPDATE's SET)
    t_now := clock_timestamp();
    UPDATE memmie.jobs j
    SET status = 'queued', retry_count = 0, run_after = t_now, worker_id = NULL,
        lease_expires_at = NULL, completed_at = NULL, output = NULL, error_message = NULL, progress = 0,
        input = j.input || jsonb_build_object('provider_version', p.version)
    WHERE j.id = pr.job_id AND j.user_id = pr.user_id AND j.status NOT IN ('queued', 'running');
    IF FOUND THEN
        UPDATE memmie.provider_processing x
        SET status = 'pending', provider_version = p.version, error_message = NULL,
            completed_at = NULL, queued_at = t_now,
            metadata = x.metadata || '{"reprocess": true}'
        WHERE x.id = pr.id AND x.user_id = pr.user_id;
        PERFORM pg_notify('memmie_jobs', 'memmie.process');
    END IF;
    RETURN pr.id;
END
$$;

-- The processing, after locking its job: MM005 unless worker holds the job's lease.
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
    PERFORM memmie._check_lease(memmie._lock_job(pr.job_id, pr.user_id), p_worker);
    RETURN pr;
END
$$;

-- The input of a processing, for the worker that holds its job's lease (MM005 otherwise): the
-- blob version it processes, its content (NULL for content kept outside PostgreSQL: then
-- storage_backend and storage_path say where) and type, and the provider version's definition.
-- The one way a worker-level role reads users' content: only while it holds the work.
CREATE OR REPLACE FUNCTION memmie.processing_input(processing_id uuid, worker_id text)
RETURNS TABLE (blob_id uuid, version int, content_type text, content bytea, metadata jsonb,
               provider_id text, provider_version text, definition jsonb,
               storage_backend text, storage_path text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    pr memmie.provider_processing;
    j  memmie.jobs;
    v  memmie.blob_versions;
    c  memmie.content_storage;
BEGIN
    SELECT * INTO pr FROM memmie.provider_processing x
    WHERE x.id = memmie._require(processing_input.processing_id, 'processing_id');
    IF NOT FOUND THEN
        RAISE EXCEPTION 'processing % does not exist', processing_input.processing_id USING ERRCODE = 'P0002';
    END IF;
    SELECT * INTO j FROM memmie.jobs x WHERE x.id = pr.job_id AND x.user_id = pr.user_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'processing % has no job: worker % does not hold it', pr.id, processing_input.worker_id
            USING ERRCODE = 'MM005';
    END IF;
    PERFORM memmie._check_lease(j, processing_input.worker_id);
    SELECT * INTO v FROM memmie.blob_versions x
    WHERE x.blob_id = pr.blob_id AND x.version = pr.processed_version AND x.user_id = pr.user_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'blob % has no version %', pr.blob_id, pr.processed_version USING ERRCODE = 'P0002';
    END IF;
    -- the content's row first, then the bytes: in one query with content_storage, Citus would
    -- push _content() down to the shard, where it cannot query a distributed table
    SELECT * INTO c FROM memmie.content_storage x WHERE x.content_hash = v.content_hash;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    RETURN QUERY
    SELECT v.blob_id, v.version, v.content_type::text,
           CASE WHEN c.storage_backend = 'postgres' THEN memmie._content(v.content_hash) END,
           v.metadata, pr.provider_id::text, pr.provider_version::text,
           (SELECT pv.definition FROM memmie.provider_versions pv
            WHERE pv.provider_id = pr.provider_id AND pv.version = pr.provider_version),
           c.storage_backend::text, c.storage_path;
END
$$;

CREATE OR REPLACE FUNCTION memmie.complete_processing(processing_id uuid, worker_id text, outputs jsonb)
RETURNS SETOF memmie.blobs
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    pr        memmie.provider_processing;
    created   boolean;
    p         memmie.providers;
    b         memmie.blobs;
    child     memmie.blobs;
    c         jsonb;
    i         int := 0;
    k         int;
    ttype     text;
    caused_by uuid;
    cause     jsonb;
    d         memmie.deltas;
    patch_id  uuid;
    patch_err text;
    out_ids   uuid[] := '{}';
    out_size  bigint := 0;
    content   bytea;
    first_delta uuid;
    first_out uuid;
    t_now     timestamptz;
BEGIN
    -- the job is locked and its lease checked from here on
    pr := memmie._leased_processing(complete_processing.processing_id, complete_processing.worker_id);
    PERFORM memmie._require(complete_processing.outputs, 'outputs');
    IF jsonb_typeof(complete_processing.outputs) <> 'object' THEN
        RAISE EXCEPTION 'outputs must be a JSON object, got %', jsonb_typeof(complete_processing.outputs)
            USING ERRCODE = '22023';
    END IF;
    IF EXISTS (SELECT FROM jsonb_object_keys(complete_processing.outputs) key
               WHERE key NOT IN ('children', 'patch', 'metadata')) THEN
        RAISE EXCEPTION 'outputs may hold only "children", "patch" and "metadata"' USING ERRCODE = '22023';
    END IF;
    IF complete_processing.outputs ? 'children' AND jsonb_typeof(complete_processing.outputs -> 'children') <> 'array' THEN
        RAISE EXCEPTION 'outputs.children must be an array' USING ERRCODE = '22023';
    END IF;
    IF complete_processing.outputs ? 'patch' AND jsonb_typeof(complete_processing.outputs -> 'patch') <> 'array' THEN
        RAISE EXCEPTION 'outputs.patch must be a JSON Patch (an array of operations)' USING ERRCODE = '22023';
    END IF;
    SELECT * INTO p FROM memmie.providers x WHERE x.id = pr.provider_id;
    IF p.output_schema IS NOT NULL THEN
        PERFORM memmie._validate_json(p.output_schema, complete_processing.outputs,
                                      format('output of provider %s', p.id));
    END IF;

    b := memmie._lock_blob(pr.blob_id, pr.user_id);
    IF b.deleted_at IS NOT NULL THEN
        -- the input was deleted while it was processed: nothing to attach the outputs to
        t_now := clock_timestamp();
        UPDATE memmie.provider_processing x
        SET status = 'skipped', completed_at = t_now,
            error_message = format('blob %s was deleted before the processing completed', b.id)
        WHERE x.id = pr.id AND x.user_id = pr.user_id;
        PERFORM memmie._complete_job(pr.job_id, complete_processing.worker_id,
                                     jsonb_build_object('skipped', 'input deleted'), true, pr.user_id);
        RETURN;
    END IF;
    SELECT v.delta_id INTO caused_by FROM memmie.blob_versions v
    WHERE v.blob_id = b.id AND v.version = pr.processed_version AND v.user_id = b.user_id;
    cause := jsonb_build_object('processing_id', pr.id, 'provider_id', p.id,
                                'provider_version', pr.provider_version,
                                'event_id', pr.metadata -> 'event_id',
                                'event_type', pr.metadata -> 'event_type');

    -- a patch of the input: recorded pending, then applied, or failed when it no longer applies
    IF complete_processing.outputs ? 'patch' THEN
        INSERT INTO memmie.deltas (blob_id, user_id, operation, provider_id, patch, from_version,
                                   to_version, caused_by_delta_id, caused_by_event, status)
        VALUES (b.id, b.user_id, 'transform', p.id, complete_processing.outputs -> 'patch', b.version,
                b.version + 1, caused_by, cause, 'pending')
        RETURNING id INTO patch_id;
        BEGIN
            d := memmie._apply_patch(b, complete_processing.outputs -> 'patch', p.id, caused_by, cause,
                                     patch_id);
        EXCEPTION WHEN invalid_parameter_value OR SQLSTATE 'MM007' OR SQLSTATE 'MM002'
                       OR program_limit_exceeded THEN
            patch_err := SQLERRM;
            UPDATE memmie.deltas x SET status = 'failed', error_message = patch_err
            WHERE x.id = patch_id AND x.user_id = b.user_id;
        END;
        SELECT * INTO b FROM memmie.blobs x WHERE x.id = b.id AND x.user_id = b.user_id;
    END IF;

    -- children: a new derived blob each, or a new version of the child this provider derived
    -- from this input before (matched by transform_type, in order)
    FOR c IN SELECT x FROM jsonb_array_elements(coalesce(complete_processing.outputs -> 'children', '[]')) x LOOP
        IF jsonb_typeof(c) <> 'object' THEN
            RAISE EXCEPTION 'outputs.children[%] must be an object', i USING ERRCODE = '22023';
        END IF;
        IF jsonb_typeof(c -> 'content_type') IS DISTINCT FROM 'string' THEN
            RAISE EXCEPTION 'outputs.children[%].content_type must be a string', i USING ERRCODE = '22023';
        END IF;
        IF c ? 'metadata' AND jsonb_typeof(c -> 'metadata') <> 'object' THEN
            RAISE EXCEPTION 'outputs.children[%].metadata must be an object', i USING ERRCODE = '22023';
        END IF;
        IF c ? 'tags' AND (jsonb_typeof(c -> 'tags') <> 'array'
                           OR jsonb_path_exists(c -> 'tags', '$[*] ? (@.type() != "string")')) THEN
            RAISE EXCEPTION 'outputs.children[%].tags must be an array of strings', i USING ERRCODE = '22023';
        END IF;
        IF c ? 'transform_type' AND jsonb_typeof(c -> 'transform_type') <> 'string' THEN
            RAISE EXCEPTION 'outputs.children[%].transform_type must be a string', i USING ERRCODE = '22023';
        END IF;
        content := memmie._child_bytes(c, i);
        ttype := memmie._check_text(coalesce(c ->> 'transform_type', 'derived'), 'transform_type', 255);
        -- the k-th child of this transform type in the outputs matches the k-th existing one
        SELECT count(*) INTO k FROM jsonb_array_elements(complete_processing.outputs -> 'children')
                                    WITH ORDINALITY o(x, n)
        WHERE o.n <= i AND coalesce(o.x ->> 'transform_type', 'derived') = ttype;
        -- (the edges' children as a list, the blobs of the input's user locked: on a Citus cluster
        -- a row lock is refused in a join of distributed tables, and this one goes to one shard)
        SELECT cb.* INTO child FROM memmie.blobs cb
        WHERE cb.user_id = b.user_id AND cb.deleted_at IS NULL
          AND cb.id = ANY (ARRAY(SELECT e.child_blob_id FROM memmie.blob_edges e
                                 WHERE e.parent_blob_id = b.id AND e.user_id = b.user_id AND e.provider_id = p.id
                                   AND e.transform_type = ttype))
        ORDER BY cb.created_at, cb.id
        OFFSET k LIMIT 1
        FOR NO KEY UPDATE;
        created := NOT FOUND;
        IF NOT created THEN
            -- a new version of that child: new content, type, metadata and tags
            child := memmie._replace_content(child, content, c ->> 'content_type', p.id, caused_by, cause,
                                             coalesce(c -> 'metadata', '{}'),
                                             ARRAY(SELECT jsonb_array_elements_text(coalesce(c -> 'tags', '[]'))));
        ELSE
            child := memmie._derive(ARRAY[b.id], p.id, ttype, content, c ->> 'content_type',
                                    coalesce(c -> 'metadata', '{}'),
                                    ARRAY(SELECT jsonb_array_elements_text(coalesce(c -> 'tags', '[]'))),
                                    caused_by, cause, NULL);
        END IF;
        UPDATE memmie.blob_edges e
        SET version_map = CASE WHEN created THEN '[]'::jsonb ELSE e.version_map END
                          || jsonb_build_array(jsonb_build_object('parent_version', pr.processed_version,
                                                                  'child_version', child.version))
        WHERE e.parent_blob_id = b.id AND e.child_blob_id = child.id AND e.provider_id = p.id
          AND e.user_id = b.user_id;
        IF first_delta IS NULL THEN
            first_delta := memmie._head_delta(child);
        END IF;
        out_ids := out_ids || child.id;
        out_size := out_size + length(content);
        i := i + 1;
        RETURN NEXT child;
    END LOOP;
    IF d.id IS NOT NULL THEN
        RETURN NEXT b;
    END IF;

    -- (the time, the first output and what is added to the metadata computed first: Citus
    -- refuses volatile functions in a distributed UPDATE's SET and stable ones in a CASE or
    -- COALESCE there, and Citus 13.2 crashes on an array subscript of a variable there)
    t_now := clock_timestamp();
    first_out := out_ids[1];
    cause := jsonb_build_object('output_blob_ids', to_jsonb(out_ids))
             || CASE WHEN patch_id IS NULL THEN '{}'::jsonb
                     ELSE jsonb_build_object('patch_status', CASE WHEN patch_err IS NULL THEN 'applied' ELSE 'failed' END)
                END
             || coalesce(complete_processing.outputs -> 'metadata', '{}');
    out_size := out_size + coalesce(length((complete_processing.outputs -> 'patch')::text), 0);
    UPDATE memmie.provider_processing x
    SET status = 'completed', completed_at = t_now,
        processing_time_ms = (extract(epoch FROM t_now - x.started_at) * 1000)::int,
        output_size = out_size,
        output_blob_id = first_out,
        output_delta_id = coalesce(patch_id, first_delta),
        current_blob_version = b.version,
        error_message = patch_err,
        metadata = x.metadata || cause
    WHERE x.id = pr.id AND x.user_id = pr.user_id
    RETURNING * INTO pr;
    INSERT INTO memmie.usage_increments (user_id, blobs_processed, provider_id, provider_invocations,
                                         processing_time_ms)
    VALUES (pr.user_id, 1, pr.provider_id, 1, coalesce(pr.processing_time_ms, 0));
    PERFORM memmie._complete_job(pr.job_id, complete_processing.worker_id,
                                 jsonb_build_object('output_blob_ids', to_jsonb(out_ids), 'output_delta_id', patch_id),
                                 true, pr.user_id);
END
$$;

CREATE OR REPLACE FUNCTION memmie.fail_processing(processing_id uuid, worker_id text, error text,
                                       retryable boolean DEFAULT true)
RETURNS memmie.provider_processing
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    pr memmie.provider_processing;
BEGIN
    pr := memmie._leased_processing(fail_processing.processing_id, fail_processing.worker_id);
    PERFORM memmie.fail_job(pr.job_id, fail_processing.worker_id, fail_processing.error,
                            fail_processing.retryable);
    SELECT * INTO pr FROM memmie.provider_processing x
    WHERE x.id = fail_processing.processing_id AND x.user_id = pr.user_id;
    RETURN pr;
END
$$;

-- fold_usage() for the increments of user p_user (on a Citus cluster: one shard), p_now the
-- time it writes as updated_at; the caller holds fold_usage's lock.
CREATE OR REPLACE FUNCTION memmie._fold_usage_of(p_user uuid, p_now timestamptz) RETURNS int
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n int;
BEGIN
    WITH moved AS (
        DELETE FROM memmie.usage_increments x WHERE x.user_id = p_user RETURNING *
    ), days AS (
        SELECT m.user_id, m.metric_date,
               sum(m.blobs_created) AS blobs_created, sum(m.blobs_processed) AS blobs_processed,
               sum(m.deltas_applied) AS deltas_applied,
               (array_agg(m.storage_bytes_used ORDER BY m.recorded_at DESC)
                    FILTER (WHERE m.storage_bytes_used IS NOT NULL))[1] AS storage_bytes_used,
               sum(m.processing_time_ms) AS processing_time_ms,
               sum(m.api_calls) AS api_calls, sum(m.api_errors) AS api_errors,
               sum(m.response_time_ms) AS response_time_ms
        FROM moved m GROUP BY m.user_id, m.metric_date
    ), invocations AS (
        SELECT x.user_id, x.metric_date, jsonb_object_agg(x.provider_id, x.n) AS counts
        FROM (SELECT m.user_id, m.metric_date, m.provider_id, sum(m.provider_invocations) AS n
              FROM moved m WHERE m.provider_id IS NOT NULL AND m.provider_invocations <> 0
              GROUP BY m.user_id, m.metric_date, m.provider_id) x
        GROUP BY x.user_id, x.metric_date
    ), folded AS (
        INSERT INTO memmie.usage_metrics AS um
            (user_id, metric_date, blobs_created, blobs_processed, deltas_applied,
             storage_bytes_used, provider_invocations, api_calls, api_errors,
             total_processing_time_ms, total_response_time_ms, average_response_time_ms)
        SELECT d.user_id, d.metric_date, d.blobs_created, d.blobs_processed, d.deltas_applied,
               coalesce(d.storage_bytes_used, old.storage_bytes_used, u.storage_used),
               memmie._add_counts(old.provider_invocations, i.counts),
               d.api_calls, d.api_errors, d.processing_time_ms, d.response_time_ms,
               round((coalesce(old.total_response_time_ms, 0) + d.response_time_ms)
                     / nullif(coalesce(old.api_calls, 0) + d.api_calls, 0))
        FROM days d
        JOIN memmie.user_contexts u ON u.user_id = d.user_id AND u.user_id = p_user   -- a deleted user's rows go
        LEFT JOIN invocations i ON i.user_id = d.user_id AND i.metric_date = d.metric_date
        LEFT JOIN memmie.usage_metrics old ON old.user_id = d.user_id AND old.user_id = p_user
                                           AND old.metric_date = d.metric_date
        ON CONFLICT ON CONSTRAINT unique_user_date DO UPDATE
        SET blobs_created = um.blobs_created + excluded.blobs_created,
            blobs_processed = um.blobs_processed + excluded.blobs_processed,
            deltas_applied = um.deltas_applied + excluded.deltas_applied,
            storage_bytes_used = excluded.storage_bytes_used,
            provider_invocations = excluded.provider_invocations,
            api_calls = um.api_calls + excluded.api_calls,
            api_errors = um.api_errors + excluded.api_errors,
            total_processing_time_ms = um.total_processing_time_ms + excluded.total_processing_time_ms,
            total_response_time_ms = um.total_response_time_ms + excluded.total_response_time_ms,
            average_response_time_ms = excluded.average_response_time_ms,
            updated_at = p_now
        RETURNING 1
    )
    SELECT count(*) INTO n FROM moved;
    RETURN n;
END
$$;

-- Adds every committed usage increment into usage_metrics and deletes it; returns how many it
-- folded. One session folds at a time (a second waits for the first, then folds what is left).
-- A day's storage_bytes_used is the user's storage after the day's last change (or, for a day
-- without a change, when its row was first written).
CREATE OR REPLACE FUNCTION memmie.fold_usage() RETURNS int
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n     int;
    t_now timestamptz;
    u     uuid;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('memmie.fold_usage', 0));
    -- the time once, before: Citus refuses a volatile function in the DO UPDATE SET of an INSERT
    -- into a distributed table (the rows folded are those committed before the lock was taken)
    t_now := clock_timestamp();
    IF memmie._distributed() THEN
        -- On a Citus cluster one user at a time: each statement then reads and writes the
        -- co-located rows of one user (one shard); over every user it would need joins Citus
        -- cannot run between a modifying CTE and distributed tables.
        n := 0;
        FOR u IN SELECT DISTINCT x.user_id FROM memmie.usage_increments x LOOP
            n := n + memmie._fold_usage_of(u, t_now);
        END LOOP;
        RETURN n;
    END IF;
    WITH moved AS (
        DELETE FROM memmie.usage_increments RETURNING *
    ), days AS (
        SELECT m.user_id, m.metric_date,
               sum(m.blobs_created) AS blobs_created, sum(m.blobs_processed) AS blobs_processed,
               sum(m.deltas_applied) AS deltas_applied,
               (array_agg(m.storage_bytes_used ORDER BY m.recorded_at DESC)
                    FILTER (WHERE m.storage_bytes_used IS NOT NULL))[1] AS storage_bytes_used,
               sum(m.processing_time_ms) AS processing_time_ms,
               sum(m.api_calls) AS api_calls, sum(m.api_errors) AS api_errors,
               sum(m.response_time_ms) AS response_time_ms
        FROM moved m GROUP BY m.user_id, m.metric_date
    ), invocations AS (
        SELECT x.user_id, x.metric_date, jsonb_object_agg(x.provider_id, x.n) AS counts
        FROM (SELECT m.user_id, m.metric_date, m.provider_id, sum(m.provider_invocations) AS n
              FROM moved m WHERE m.provider_id IS NOT NULL AND m.provider_invocations <> 0
              GROUP BY m.user_id, m.metric_date, m.provider_id) x
        GROUP BY x.user_id, x.metric_date
    ), folded AS (
        INSERT INTO memmie.usage_metrics AS um
            (user_id, metric_date, blobs_created, blobs_processed, deltas_applied,
             storage_bytes_used, provider_invocations, api_calls, api_errors,
             total_processing_time_ms, total_response_time_ms, average_response_time_ms)
        SELECT d.user_id, d.metric_date, d.blobs_created, d.blobs_processed, d.deltas_applied,
               coalesce(d.storage_bytes_used, old.storage_bytes_used, u.storage_used),
               memmie._add_counts(old.provider_invocations, i.counts),
               d.api_calls, d.api_errors, d.processing_time_ms, d.response_time_ms,
               round((coalesce(old.total_response_time_ms, 0) + d.response_time_ms)
                     / nullif(coalesce(old.api_calls, 0) + d.api_calls, 0))
        FROM days d
        JOIN memmie.user_contexts u ON u.user_id = d.user_id   -- a deleted user's rows go
        LEFT JOIN invocations i ON i.user_id = d.user_id AND i.metric_date = d.metric_date
        LEFT JOIN memmie.usage_metrics old ON old.user_id = d.user_id AND old.metric_date = d.metric_date
        ON CONFLICT ON CONSTRAINT unique_user_date DO UPDATE
        SET blobs_created = um.blobs_created + excluded.blobs_created,
            blobs_processed = um.blobs_processed + excluded.blobs_processed,
            deltas_applied = um.deltas_applied + excluded.deltas_applied,
            storage_bytes_used = excluded.storage_bytes_used,
            provider_invocations = excluded.provider_invocations,
            api_calls = um.api_calls + excluded.api_calls,
            api_errors = um.api_errors + excluded.api_errors,
            total_processing_time_ms = um.total_processing_time_ms + excluded.total_processing_time_ms,
            total_response_time_ms = um.total_response_time_ms + excluded.total_response_time_ms,
            average_response_time_ms = excluded.average_response_time_ms,
            updated_at = t_now
        RETURNING 1
    )
    SELECT count(*) INTO n FROM moved;
    RETURN n;
END
$$;

-- The retention of versions: a user whose quota_limits has keep_versions = N (N >= 1) keeps the
-- latest N versions of each live blob; squash_history removes the older ones. Returns how many
-- versions were removed. Run by maintenance() (before gc_content, which then takes the contents
-- only those versions used once their grace period has passed), blob by blob in user order,
-- each taking its user's and its blob's locks as any writer does.
CREATE OR REPLACE FUNCTION memmie._apply_keep_versions() RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r     record;
    total bigint := 0;
BEGIN
    FOR r IN
        SELECT b.id, b.user_id, b.version - q.keep + 1 AS before_version
        FROM memmie.user_contexts u
        CROSS JOIN LATERAL (SELECT floor((u.quota_limits ->> 'keep_versions')::numeric) AS keep) q
        JOIN memmie.blobs b ON b.user_id = u.user_id AND b.deleted_at IS NULL
        WHERE q.keep >= 1 AND b.version > q.keep
          AND (SELECT min(v.version) FROM memmie.blob_versions v WHERE v.blob_id = b.id AND v.user_id = b.user_id)
              < b.version - q.keep + 1
        ORDER BY b.user_id, b.id
    LOOP
        BEGIN
            -- (with its user as the scope: the blob is locked on its shard)
            total := total + memmie._squash_history(r.id, r.before_version::int, NULL, r.user_id);
        EXCEPTION WHEN no_data_found THEN
            -- (P0002: deleted since the query read it; nothing to keep)
            NULL;
        END;
    END LOOP;
    RETURN total;
END
$$;

-- The routine upkeep (the design document's maintenance_routine, without its defects): one
-- session at a time; a second caller returns at once saying so. Returns what it did.
CREATE OR REPLACE FUNCTION memmie.maintenance() RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    report    jsonb := '{}';
    t0        timestamptz := clock_timestamp();
    t_expired timestamptz;
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
    -- jobs past expires_at are never handed out; a running one is left to its worker (the
    -- time in a variable: Citus refuses a volatile function in a distributed DELETE's WHERE)
    t_expired := clock_timestamp();
    DELETE FROM memmie.jobs j WHERE j.expires_at < t_expired AND j.status <> 'running';
    GET DIAGNOSTICS n = ROW_COUNT;
    report := report || jsonb_build_object('expired_jobs_removed', n);
    report := report || jsonb_build_object('event_partitions_dropped',
        memmie.drop_old_partitions('memmie.events', retention), 'event_retention', justify_hours(retention)::text);
    report := report || jsonb_build_object('versions_squashed', memmie._apply_keep_versions());
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
-- Counting, content and GC on Citus (issue 16): after distribute() the counts are kept by
-- row-level triggers that apply them at once to the co-located rows of the same user (swapped in
-- by distribute(), memmie._citus_counting_triggers); gc_content is there a fan-out that recounts
-- content_storage.reference_count from user_content_refs and re-checks each candidate on its
-- shard; writers deduplicating onto old content touch it (memmie._touch_content); check() joins
-- distributed tables on user_id and checks user_content_refs there; verify_content's work is in
-- PL/pgSQL; _zero_counters is told its table by its trigger's argument (a shard has another
-- name). The single-node triggers and paths are unchanged.
DROP TRIGGER zero_counters ON memmie.content_storage;
DROP TRIGGER zero_counters ON memmie.user_contexts;
CREATE OR REPLACE FUNCTION memmie._zero_counters() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_ARGV[0] = 'content_storage' THEN
        NEW.reference_count := 0;
    ELSE
        NEW.storage_used := 0;
        NEW.blob_count := 0;
    END IF;
    RETURN NEW;
END
$$;

CREATE OR REPLACE FUNCTION memmie._count_refs_at_once() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n    int;
    size bigint;
BEGIN
    IF TG_OP OPERATOR(pg_catalog.<>) 'DELETE' THEN
        INSERT INTO memmie.user_content_refs AS u (user_id, content_hash, content_size, reference_count)
        VALUES (NEW.user_id, NEW.content_hash, NEW.content_size, 1)
        ON CONFLICT (user_id, content_hash)
        DO UPDATE SET reference_count = u.reference_count OPERATOR(pg_catalog.+) 1
        RETURNING u.reference_count INTO n;
        IF n OPERATOR(pg_catalog.=) 1 THEN
            UPDATE memmie.user_contexts c SET storage_used = c.storage_used OPERATOR(pg_catalog.+) NEW.content_size
            WHERE c.user_id OPERATOR(pg_catalog.=) NEW.user_id;
        END IF;
    END IF;
    IF TG_OP OPERATOR(pg_catalog.<>) 'INSERT' THEN
        DELETE FROM memmie.user_content_refs u
        WHERE u.user_id OPERATOR(pg_catalog.=) OLD.user_id AND u.content_hash OPERATOR(pg_catalog.=) OLD.content_hash
          AND u.reference_count OPERATOR(pg_catalog.<=) 1
        RETURNING u.content_size INTO size;
        IF FOUND THEN
            UPDATE memmie.user_contexts c SET storage_used = c.storage_used OPERATOR(pg_catalog.-) size
            WHERE c.user_id OPERATOR(pg_catalog.=) OLD.user_id;
        ELSE
            UPDATE memmie.user_content_refs u SET reference_count = u.reference_count OPERATOR(pg_catalog.-) 1
            WHERE u.user_id OPERATOR(pg_catalog.=) OLD.user_id AND u.content_hash OPERATOR(pg_catalog.=) OLD.content_hash;
        END IF;
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION memmie._count_blobs_at_once() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    change int := 0;
    usr    uuid;
BEGIN
    IF TG_OP OPERATOR(pg_catalog.<>) 'DELETE' THEN
        usr := NEW.user_id;
        IF NEW.deleted_at IS NULL THEN
            change := 1;
        END IF;
    END IF;
    IF TG_OP OPERATOR(pg_catalog.<>) 'INSERT' THEN
        usr := OLD.user_id;
        IF OLD.deleted_at IS NULL THEN
            change := change OPERATOR(pg_catalog.-) 1;
        END IF;
    END IF;
    IF change OPERATOR(pg_catalog.<>) 0 THEN
        UPDATE memmie.user_contexts c SET blob_count = c.blob_count OPERATOR(pg_catalog.+) change
        WHERE c.user_id OPERATOR(pg_catalog.=) usr;
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION memmie._touch_content(p_hash text, p_seen timestamptz) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    stale timestamptz := pg_catalog.now() OPERATOR(pg_catalog.-) interval '1 minute';
BEGIN
    IF p_seen OPERATOR(pg_catalog.<) stale AND memmie._distributed() THEN
        UPDATE memmie.content_storage c SET last_accessed = pg_catalog.now()
        WHERE c.content_hash OPERATOR(pg_catalog.=) p_hash AND c.last_accessed OPERATOR(pg_catalog.<) stale;
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION memmie.put_content(data bytea, mime_type text DEFAULT NULL) RETURNS text
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    h      text;
    enc    bytea;
    stored bytea;   -- what goes into content_storage.content (set once, when first needed)
    codec  text;
    seen   timestamptz;
BEGIN
    IF data IS NULL THEN
        RAISE EXCEPTION 'put_content: data must not be NULL' USING ERRCODE = '22023';
    END IF;
    PERFORM memmie._check_content_size(length(data));
    IF mime_type IS NOT NULL THEN
        PERFORM memmie._check_mime(mime_type);
    END IF;
    h := memmie.sha256(data);
    LOOP
        -- An existing content is locked (FOR KEY SHARE) until the caller's transaction ends, so
        -- gc_content (FOR UPDATE SKIP LOCKED) cannot delete it under the reference being made;
        -- one that gc_content is deleting right now is waited for, then stored again.
        SELECT c.last_accessed INTO seen FROM memmie.content_storage c
        WHERE c.content_hash = h AND c.storage_backend = 'postgres' FOR KEY SHARE;
        IF FOUND THEN
            -- (the test here: most contents found were touched within the minute)
            IF seen < now() - interval '1 minute' THEN
                PERFORM memmie._touch_content(h, seen);
            END IF;
            EXIT;
        END IF;
        IF stored IS NULL THEN
            enc := memmie._encode_content(data);
            stored := coalesce(enc, data);
            codec := CASE WHEN enc IS NULL THEN 'none' ELSE 'zstd' END;
        END IF;
        -- known as content kept outside PostgreSQL (create_external_blob): now that the bytes
        -- are here, they are stored here; storage_path still names the outside copy, so that
        -- gc_content reports it when the content goes
        UPDATE memmie.content_storage c
        SET content = stored, compression = codec, compressed_size = length(stored), storage_backend = 'postgres',
            mime_type = coalesce(c.mime_type, put_content.mime_type), last_accessed = CURRENT_TIMESTAMP
        WHERE c.content_hash = h AND c.storage_backend <> 'postgres' AND c.original_size = length(data);
        CONTINUE WHEN FOUND;
        IF EXISTS (SELECT FROM memmie.content_storage c WHERE c.content_hash = h AND c.storage_backend <> 'postgres') THEN
            RAISE EXCEPTION 'content % is recorded as kept outside PostgreSQL with a size other than % bytes',
                h, length(data) USING ERRCODE = 'MM006';
        END IF;
        INSERT INTO memmie.content_storage
            (content_hash, content, compression, original_size, compressed_size, mime_type)
        VALUES (h, stored, codec, length(data), length(stored), mime_type)
        ON CONFLICT (content_hash) DO NOTHING;
        EXIT WHEN FOUND;
    END LOOP;
    RETURN h;
END
$$;

CREATE OR REPLACE FUNCTION memmie._verify_contents(p_hash text)
RETURNS TABLE (content_hash text, ok boolean, detail text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    target text := memmie._verify_target(p_hash);
BEGIN
    RETURN QUERY
    SELECT c.content_hash::pg_catalog.text,
           v.problem IS NULL,
           coalesce(v.problem,
                    CASE WHEN c.storage_backend OPERATOR(pg_catalog.=) 'postgres' THEN 'ok'
                         ELSE 'stored in ' OPERATOR(pg_catalog.||) c.storage_backend OPERATOR(pg_catalog.||) ', not checked here' END)
    FROM memmie.content_storage c
    CROSS JOIN LATERAL memmie._verify_content_row(c.content_hash, c.compression, c.storage_backend,
                                                  c.storage_path, c.content, c.original_size) AS v(problem)
    WHERE target IS NULL OR c.content_hash OPERATOR(pg_catalog.=) target
    ORDER BY c.content_hash;
END
$$;

CREATE OR REPLACE FUNCTION memmie.verify_content(content_hash text DEFAULT NULL)
RETURNS TABLE (content_hash text, ok boolean, detail text)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT * FROM memmie._verify_contents($1)
$$;

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
    -- (on a Citus cluster: kept by gc_content until the reference is seen everywhere)
    PERFORM memmie._touch_content(h, c.last_accessed);
    RETURN (s - 'content') || jsonb_build_object('content_hash', h, 'content_size', size,
                                                 'content_type', p_type);
END
$$;

CREATE OR REPLACE FUNCTION memmie._replay_mismatches()
RETURNS TABLE (blob_id uuid, version int, problem text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r      record;
    cur    uuid;
    s      jsonb;
    stored jsonb;
    broken boolean;
BEGIN
    FOR r IN
        SELECT coalesce(v.blob_id, d.blob_id) AS blob_id, coalesce(v.version, d.to_version) AS version,
               d.patch, v.blob_id IS NOT NULL AS has_version,
               v.content_hash, v.content_size, v.content_type, v.metadata, v.tags, v.deleted,
               k.state AS snapshot
        FROM memmie.blob_versions v
        FULL JOIN (SELECT x.blob_id, x.user_id, x.to_version, x.patch FROM memmie.deltas x WHERE x.status = 'applied') d
               ON d.blob_id = v.blob_id AND d.to_version = v.version AND d.user_id = v.user_id
        LEFT JOIN memmie.blob_snapshots k ON k.blob_id = v.blob_id AND k.version = v.version AND k.user_id = v.user_id
        ORDER BY 1, 2
    LOOP
        -- made here, not in the query: on a Citus cluster the query runs on the shards, and
        -- _make_state reads content_storage (distributed by content_hash) for JSON content
        stored := memmie._make_state(r.content_hash, r.content_size, r.content_type, r.metadata, r.tags, r.deleted);
        IF r.blob_id IS DISTINCT FROM cur THEN
            cur := r.blob_id;
            s := NULL;
            broken := false;
            IF r.version > 1 THEN
                -- a squashed history: it starts from the snapshot of its first version
                blob_id := r.blob_id;
                version := r.version;
                IF r.snapshot IS NULL OR NOT r.has_version THEN
                    problem := 'the history starts after version 1 without a kept state';
                    broken := true;
                    RETURN NEXT;
                    CONTINUE;
                END IF;
                s := r.snapshot;
                IF s IS DISTINCT FROM stored THEN
                    problem := NULL;
                    RETURN NEXT;
                END IF;
                CONTINUE;
            END IF;
        END IF;
        CONTINUE WHEN broken;
        IF r.patch IS NOT NULL THEN
            BEGIN
                -- replay's own engine and limits, as blob_state uses them (a state may nest 128
                -- levels, its patch two more: more than jsonb_patch reads), from the state so far
                s := CASE WHEN s IS NULL THEN memmie._replay(ARRAY[r.patch::pg_catalog.text])::pg_catalog.jsonb
                          ELSE memmie._replay_from(s, ARRAY[r.patch::pg_catalog.text]) END;
            EXCEPTION WHEN OTHERS THEN
                blob_id := r.blob_id;
                version := r.version;
                problem := format('its delta does not apply (%s: %s)', SQLSTATE, SQLERRM);
                broken := true;
                RETURN NEXT;
                CONTINUE;
            END;
        END IF;
        IF r.has_version AND s IS DISTINCT FROM stored THEN
            blob_id := r.blob_id;
            version := r.version;
            problem := NULL;
            RETURN NEXT;
        ELSIF r.snapshot IS NOT NULL AND s IS DISTINCT FROM r.snapshot THEN
            blob_id := r.blob_id;
            version := r.version;
            problem := 'its kept state (blob_snapshots) is not the replayed one';
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
    IF memmie._distributed() THEN
        -- On a Citus cluster (docs/schema.md "Counting on Citus"): the exact references are
        -- user_content_refs, kept at once per user on the user's node; each must equal the user's
        -- version rows naming the content, and name a stored content.
        -- content_storage.reference_count is a recount made by gc_content() as of its last run,
        -- not checked here.
        SELECT count(*), string_agg(format('user %s, content %s: %s references counted, %s versions name it',
                                           x.user_id, x.content_hash, x.refs, x.n), '; ')
               FILTER (WHERE x.rn <= 3)
        INTO bad, sample
        FROM (SELECT coalesce(r.user_id, v.user_id) AS user_id, coalesce(r.content_hash, v.content_hash) AS content_hash,
                     coalesce(r.reference_count, 0) AS refs, coalesce(v.n, 0) AS n,
                     row_number() OVER (ORDER BY coalesce(r.user_id, v.user_id), coalesce(r.content_hash, v.content_hash)) AS rn
              FROM (SELECT w.user_id, w.content_hash, count(*) AS n FROM memmie.blob_versions w GROUP BY 1, 2) v
              FULL JOIN memmie.user_content_refs r ON r.user_id = v.user_id AND r.content_hash = v.content_hash
              WHERE r.reference_count IS DISTINCT FROM v.n) x;
        SELECT bad + count(*),
               concat_ws('; ', sample, string_agg(format('content %s is referenced but not stored', x.content_hash), '; ')
                                       FILTER (WHERE x.rn <= 3))
        INTO bad, sample
        FROM (SELECT r.content_hash, row_number() OVER (ORDER BY r.content_hash) AS rn
              FROM (SELECT DISTINCT u.content_hash FROM memmie.user_content_refs u) r
              WHERE r.content_hash NOT IN (SELECT c.content_hash FROM memmie.content_storage c)) x;
        SELECT count(*) INTO total FROM memmie.user_content_refs;
        RETURN QUERY SELECT * FROM memmie._check_row('reference_counts', bad, sample,
            format('%s references of users to contents (user_content_refs), each stored; content_storage.reference_count (recounted by gc_content) not checked',
                   total));
    ELSE
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
    END IF;

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
          LEFT JOIN memmie.blob_versions v ON v.blob_id = b.id AND v.version = b.version AND v.user_id = b.user_id
          LEFT JOIN (SELECT w.blob_id, w.user_id, count(*) + min(w.version) - 1 AS top
                     FROM memmie.blob_versions w GROUP BY 1, 2) w
                 ON w.blob_id = b.id AND w.user_id = b.user_id
          WHERE v.blob_id IS NULL
             OR (b.content_hash, b.content_size, b.content_type, b.metadata, b.tags, b.deleted_at IS NOT NULL)
                IS DISTINCT FROM (v.content_hash, v.content_size, v.content_type, v.metadata, v.tags, v.deleted)
             OR w.top <> b.version) x;
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

    -- edges join blobs of one user, the edge's; every parent_blob_id has its edge (the joins are
    -- on user_id, so that on a Citus cluster they stay within each user's shards)
    SELECT count(*), string_agg(x.what, '; ') FILTER (WHERE x.rn <= 3)
    INTO bad, sample
    FROM (SELECT y.what, row_number() OVER (ORDER BY y.what) AS rn FROM (
              SELECT format('edge %s -> %s crosses users', e.parent_blob_id, e.child_blob_id) AS what
              FROM memmie.blob_edges e
              LEFT JOIN memmie.blobs p ON p.id = e.parent_blob_id AND p.user_id = e.user_id
              LEFT JOIN memmie.blobs c ON c.id = e.child_blob_id AND c.user_id = e.user_id
              WHERE p.id IS NULL OR c.id IS NULL
              UNION ALL
              SELECT format('blob %s has parent %s without an edge', b.id, b.parent_blob_id)
              FROM memmie.blobs b
              WHERE b.parent_blob_id IS NOT NULL
                AND NOT EXISTS (SELECT FROM memmie.blob_edges e
                                WHERE e.parent_blob_id = b.parent_blob_id AND e.child_blob_id = b.id
                                  AND e.user_id = b.user_id)) y) x;
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

CREATE OR REPLACE FUNCTION memmie._recount_references() RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n bigint;
    m bigint;
BEGIN
    UPDATE memmie.content_storage c SET reference_count = r.n
    FROM (SELECT u.content_hash, pg_catalog.sum(u.reference_count)::pg_catalog.int4 AS n
          FROM memmie.user_content_refs u GROUP BY u.content_hash) r
    WHERE c.content_hash OPERATOR(pg_catalog.=) r.content_hash
      AND c.reference_count OPERATOR(pg_catalog.<>) r.n;
    GET DIAGNOSTICS n = ROW_COUNT;
    UPDATE memmie.content_storage c SET reference_count = 0
    WHERE c.reference_count OPERATOR(pg_catalog.<>) 0
      AND c.content_hash OPERATOR(pg_catalog.<>) ALL (SELECT u.content_hash FROM memmie.user_content_refs u);
    GET DIAGNOSTICS m = ROW_COUNT;
    RETURN n OPERATOR(pg_catalog.+) m;
END
$$;

CREATE OR REPLACE FUNCTION memmie._gc_content_distributed(p_cutoff timestamptz)
RETURNS TABLE (content_hash text, storage_backend text, storage_path text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    candidates text[];
    locked     text[];
    referenced text[];
    h          text;
    i          int := 0;
    batch      constant int := 1000;
BEGIN
    -- one at a time (until commit): two recounts would lock the same rows on many shards at once
    PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended('memmie.gc_content', 0));
    PERFORM memmie._recount_references();
    SELECT pg_catalog.array_agg(c.content_hash) INTO candidates
    FROM memmie.content_storage c
    WHERE c.reference_count OPERATOR(pg_catalog.=) 0 AND c.last_accessed OPERATOR(pg_catalog.<) p_cutoff;
    WHILE i OPERATOR(pg_catalog.<) coalesce(pg_catalog.cardinality(candidates), 0) LOOP
        locked := '{}';
        FOREACH h IN ARRAY candidates[i OPERATOR(pg_catalog.+) 1 : i OPERATOR(pg_catalog.+) batch] LOOP
            PERFORM FROM memmie.content_storage c
            WHERE c.content_hash OPERATOR(pg_catalog.=) h AND c.last_accessed OPERATOR(pg_catalog.<) p_cutoff
            FOR UPDATE SKIP LOCKED;
            IF FOUND THEN
                locked := locked OPERATOR(pg_catalog.||) h;
            END IF;
        END LOOP;
        i := i OPERATOR(pg_catalog.+) batch;
        CONTINUE WHEN pg_catalog.cardinality(locked) OPERATOR(pg_catalog.=) 0;
        SELECT pg_catalog.array_agg(DISTINCT u.content_hash::pg_catalog.text) INTO referenced
        FROM memmie.user_content_refs u WHERE u.content_hash OPERATOR(pg_catalog.=) ANY (locked);
        RETURN QUERY
        DELETE FROM memmie.content_storage c
        WHERE c.content_hash OPERATOR(pg_catalog.=) ANY (locked)
          AND c.content_hash OPERATOR(pg_catalog.<>) ALL (coalesce(referenced, '{}'))
        RETURNING c.content_hash::pg_catalog.text, c.storage_backend::pg_catalog.text, c.storage_path;
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION memmie.gc_content(grace interval DEFAULT '1 hour')
RETURNS TABLE (content_hash text, storage_backend text, storage_path text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    IF gc_content.grace IS NULL OR gc_content.grace < interval '0' THEN
        RAISE EXCEPTION 'grace must be a non-negative interval, got %', gc_content.grace USING ERRCODE = '22023';
    END IF;
    IF memmie._distributed() THEN
        RETURN QUERY SELECT * FROM memmie._gc_content_distributed(clock_timestamp() - gc_content.grace);
        RETURN;
    END IF;
    RETURN QUERY
    WITH garbage AS MATERIALIZED (
        SELECT c.content_hash FROM memmie.content_storage c
        WHERE c.reference_count = 0 AND c.last_accessed < clock_timestamp() - gc_content.grace
          AND c.content_hash NOT IN (SELECT p.content_hash FROM memmie._pending_references() p WHERE p.n > 0)
        FOR UPDATE SKIP LOCKED
    )
    DELETE FROM memmie.content_storage c USING garbage g
    WHERE c.content_hash = g.content_hash AND c.reference_count = 0
    RETURNING c.content_hash::text, c.storage_backend::text, c.storage_path;
END
$$;

CREATE OR REPLACE FUNCTION memmie._citus_counting_triggers() RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
-- Swaps the counting triggers of one node (sql/counters.sql) for those of a cluster: on
-- blob_versions and blobs, the single-node ones (transition tables, counts written at commit)
-- dropped, the row-level ones that apply the counts at once to the co-located rows of the same
-- user made. Run by distribute() on the coordinator and on every worker's copy before the tables
-- are placed (the shards get the coordinator's triggers); on a table already placed, Citus takes
-- the change to its shards (citus.enable_unsafe_triggers). True when it changed something;
-- nothing when run twice.
DECLARE
    t       record;
    changed boolean := false;
BEGIN
    FOR t IN
        SELECT g.tgname, g.tgrelid::pg_catalog.regclass AS tab FROM pg_catalog.pg_trigger g
        WHERE (g.tgrelid OPERATOR(pg_catalog.=) 'memmie.blob_versions'::pg_catalog.regclass
               AND g.tgname OPERATOR(pg_catalog.=) ANY (ARRAY['content_refs', 'content_refs_update', 'user_storage_insert',
                                                              'user_storage_delete', 'user_storage_update']::pg_catalog.name[]))
           OR (g.tgrelid OPERATOR(pg_catalog.=) 'memmie.blobs'::pg_catalog.regclass
               AND g.tgname OPERATOR(pg_catalog.=) ANY (ARRAY['count_blobs_insert_delete', 'count_blobs_update']::pg_catalog.name[]))
        ORDER BY 2, 1
    LOOP
        EXECUTE pg_catalog.format('DROP TRIGGER %I ON %s', t.tgname, t.tab);
        changed := true;
    END LOOP;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_trigger g
                   WHERE g.tgrelid OPERATOR(pg_catalog.=) 'memmie.blob_versions'::pg_catalog.regclass
                     AND g.tgname OPERATOR(pg_catalog.=) 'count_refs_at_once') THEN
        CREATE TRIGGER count_refs_at_once AFTER INSERT OR DELETE ON memmie.blob_versions
            FOR EACH ROW EXECUTE FUNCTION memmie._count_refs_at_once();
        CREATE TRIGGER count_refs_at_once_update AFTER UPDATE OF content_hash ON memmie.blob_versions
            FOR EACH ROW WHEN (OLD.content_hash IS DISTINCT FROM NEW.content_hash)
            EXECUTE FUNCTION memmie._count_refs_at_once();
        changed := true;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_trigger g
                   WHERE g.tgrelid OPERATOR(pg_catalog.=) 'memmie.blobs'::pg_catalog.regclass
                     AND g.tgname OPERATOR(pg_catalog.=) 'count_blobs_at_once') THEN
        CREATE TRIGGER count_blobs_at_once AFTER INSERT OR DELETE ON memmie.blobs
            FOR EACH ROW EXECUTE FUNCTION memmie._count_blobs_at_once();
        CREATE TRIGGER count_blobs_at_once_update AFTER UPDATE OF deleted_at ON memmie.blobs
            FOR EACH ROW WHEN ((OLD.deleted_at IS NULL) IS DISTINCT FROM (NEW.deleted_at IS NULL))
            EXECUTE FUNCTION memmie._count_blobs_at_once();
        changed := true;
    END IF;
    RETURN changed;
END
$$;

CREATE OR REPLACE FUNCTION memmie.distribute() RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    placed  jsonb := '{}';
    changed int := 0;
    fks     jsonb;
    k       record;
    t       record;
    part    regclass;
    pkey    text;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname OPERATOR(pg_catalog.=) 'citus') THEN
        RAISE EXCEPTION 'memmie.distribute() needs the citus extension in this database'
            USING ERRCODE = '55000',
                  HINT = 'on a Citus coordinator: CREATE EXTENSION citus, citus_add_node() for each worker, then memmie.distribute()';
    END IF;
    IF NOT pg_catalog.citus_is_coordinator() THEN
        RAISE EXCEPTION 'memmie.distribute() runs on the Citus coordinator, not on a worker'
            USING ERRCODE = '55000';
    END IF;
    -- 0. The counting triggers of a cluster (sql/counters.sql) in place of the single-node ones,
    -- here and, while the tables are not placed yet, on every worker's copy (the shards get the
    -- coordinator's at placement). Counted with the keys changed.
    PERFORM pg_catalog.set_config('citus.enable_unsafe_triggers', 'on', true);
    IF memmie._citus_counting_triggers() THEN
        changed := changed OPERATOR(pg_catalog.+) 1;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_dist_partition d
                   WHERE d.logicalrelid OPERATOR(pg_catalog.=) 'memmie.blob_versions'::pg_catalog.regclass) THEN
        PERFORM memmie._citus_on_workers('SELECT memmie._citus_counting_triggers()');
    END IF;
    -- Every table placed (a second call): nothing to place, but the recorded grantees' levels
    -- are given again on every node (a worker added since gets the functions' grants).
    IF NOT EXISTS (SELECT FROM pg_catalog.unnest(ARRAY[
                       'memmie.providers', 'memmie.provider_versions', 'memmie.provider_metrics',
                       'memmie.grantees', 'memmie.user_contexts', 'memmie.blobs', 'memmie.blob_versions', 'memmie.blob_snapshots',
                       'memmie.blob_edges', 'memmie.user_content_refs',
                       'memmie.deltas', 'memmie.events', 'memmie.provider_processing', 'memmie.jobs',
                       'memmie.usage_metrics', 'memmie.usage_increments', 'memmie.content_storage']) x
                   WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_dist_partition d
                                     WHERE d.logicalrelid OPERATOR(pg_catalog.=) x::pg_catalog.regclass)) THEN
        PERFORM pg_catalog.set_config('citus.multi_shard_modify_mode', 'sequential', true);
        PERFORM memmie._reapply_grants();
        RETURN pg_catalog.jsonb_build_object('placed', placed, 'keys_changed', changed,
            'coordinator_only', pg_catalog.jsonb_build_array());
    END IF;
    -- DDL on distributed and reference tables in one transaction: one connection per node
    PERFORM pg_catalog.set_config('citus.multi_shard_modify_mode', 'sequential', true);
    -- memmie's counting and bookkeeping triggers go with the tables (they run on the shards)
    PERFORM pg_catalog.set_config('citus.enable_unsafe_triggers', 'on', true);

    -- 1. Every foreign key between memmie's tables is dropped and made again once all are placed
    -- (a table placed while a local table references it, or it references a local one, makes
    -- Citus convert the local one, which fails: the extension made it on every node). On the way
    -- the foreign keys to blobs become (id, user_id) pairs (a derived blob has its parent's
    -- user; an edge joins two blobs of its user), and some are not made again: blob_versions to
    -- content_storage (not co-located) and provider_processing.output_blob_id (ON DELETE SET
    -- NULL: Citus refuses SET NULL in a key with the distribution column).
    SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
               'tab', c.conrelid::pg_catalog.regclass::pg_catalog.text, 'name', c.conname,
               'def', CASE WHEN c.conname OPERATOR(pg_catalog.=) 'blob_versions_content_hash_fkey'
                             OR c.confdeltype OPERATOR(pg_catalog.=) ANY (ARRAY['n', 'd']::"char"[]) THEN NULL
                           WHEN c.confrelid OPERATOR(pg_catalog.=) 'memmie.blob_versions'::pg_catalog.regclass
                               THEN 'FOREIGN KEY (blob_id, version, user_id) REFERENCES memmie.blob_versions(blob_id, version, user_id) ON DELETE CASCADE'
                           WHEN c.confrelid OPERATOR(pg_catalog.=) 'memmie.blobs'::pg_catalog.regclass
                               THEN pg_catalog.format('FOREIGN KEY (%I, user_id) REFERENCES memmie.blobs(id, user_id)%s',
                                        (SELECT a.attname FROM pg_catalog.pg_attribute a
                                         WHERE a.attrelid OPERATOR(pg_catalog.=) c.conrelid
                                           AND a.attnum OPERATOR(pg_catalog.=) c.conkey[1]),
                                        CASE c.confdeltype WHEN 'c' THEN ' ON DELETE CASCADE' ELSE '' END)
                           ELSE pg_catalog.pg_get_constraintdef(c.oid) END,
               'old', pg_catalog.pg_get_constraintdef(c.oid)))
    INTO fks
    FROM pg_catalog.pg_constraint c
    WHERE c.contype OPERATOR(pg_catalog.=) 'f' AND c.conparentid OPERATOR(pg_catalog.=) 0
      AND c.connamespace OPERATOR(pg_catalog.=) 'memmie'::pg_catalog.regnamespace;
    FOR k IN SELECT * FROM pg_catalog.jsonb_to_recordset(coalesce(fks, '[]')) AS x(tab text, name text, def text, old text) LOOP
        EXECUTE pg_catalog.format('ALTER TABLE %s DROP CONSTRAINT %I', k.tab, k.name);
        PERFORM memmie._citus_on_workers(pg_catalog.format('SELECT memmie._citus_key(%L, %L, NULL)', k.tab, k.name));
        IF k.def IS DISTINCT FROM k.old THEN
            changed := changed OPERATOR(pg_catalog.+) 1;
        END IF;
    END LOOP;

    -- 2. Primary keys and unique constraints with user_id, on the tables not placed yet.
    FOR k IN SELECT * FROM (VALUES
        ('memmie.blobs', 'blobs_pkey', 'PRIMARY KEY (id, user_id)'),
        ('memmie.blob_versions', 'blob_versions_pkey', 'PRIMARY KEY (blob_id, version, user_id)'),
        ('memmie.blob_snapshots', 'blob_snapshots_pkey', 'PRIMARY KEY (blob_id, version, user_id)'),
        ('memmie.blob_edges', 'blob_edges_pkey', 'PRIMARY KEY (id, user_id)'),
        ('memmie.blob_edges', 'unique_edge', 'UNIQUE (parent_blob_id, child_blob_id, provider_id, user_id)'),
        ('memmie.provider_processing', 'provider_processing_pkey', 'PRIMARY KEY (id, user_id)'),
        ('memmie.provider_processing', 'unique_processing', 'UNIQUE (blob_id, provider_id, processed_version, user_id)'),
        ('memmie.jobs', 'jobs_pkey', 'PRIMARY KEY (id, user_id)'),
        ('memmie.usage_metrics', 'usage_metrics_pkey', 'PRIMARY KEY (id, user_id)')) AS v(tab, name, def)
    WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_dist_partition d
                      WHERE d.logicalrelid OPERATOR(pg_catalog.=) v.tab::pg_catalog.regclass)
    LOOP
        IF memmie._citus_key(k.tab::pg_catalog.regclass, k.name, k.def) THEN
            changed := changed OPERATOR(pg_catalog.+) 1;
        END IF;
        PERFORM memmie._citus_on_workers(pg_catalog.format('SELECT memmie._citus_key(%L, %L, %L)', k.tab, k.name, k.def));
    END LOOP;
    -- deltas and events keep their primary keys on each partition (sql/partitions.sql)
    FOR part IN
        SELECT i.inhrelid::pg_catalog.regclass FROM pg_catalog.pg_inherits i
        WHERE i.inhparent OPERATOR(pg_catalog.=) ANY (ARRAY['memmie.deltas'::pg_catalog.regclass, 'memmie.events'::pg_catalog.regclass])
          AND NOT EXISTS (SELECT FROM pg_catalog.pg_dist_partition d
                          WHERE d.logicalrelid OPERATOR(pg_catalog.=) i.inhrelid::pg_catalog.regclass)
    LOOP
        pkey := (SELECT c.conname FROM pg_catalog.pg_constraint c
                 WHERE c.conrelid OPERATOR(pg_catalog.=) part AND c.contype OPERATOR(pg_catalog.=) 'p');
        IF memmie._citus_key(part, pkey, 'PRIMARY KEY (id, created_at, user_id)') THEN
            changed := changed OPERATOR(pg_catalog.+) 1;
        END IF;
        PERFORM memmie._citus_on_workers(pg_catalog.format('SELECT memmie._citus_key(%L, %L, %L)',
                                         part, pkey, 'PRIMARY KEY (id, created_at, user_id)'));
    END LOOP;

    -- 3. Row-level security: Citus refuses subqueries in the policies of distributed tables,
    -- and the policies run on the workers, in the query on a shard, where nothing distributed
    -- may be read. The tenant tables' policy without its scalar subqueries (the same rows; the
    -- functions are then called per row), with _unrestricted_on_node() (the admin level from
    -- this node's placement of grantees, sql/access.sql) for _unrestricted();
    -- content_storage's (an EXISTS over user_content_refs) cannot do without a subquery, so
    -- there only the admin level reads the table directly (functions read content for the
    -- bound user as before). blob_edges has a user_id since 0.3.0 and gets the tenant tables'
    -- policy (a table without one would be admin-level only, as content_storage).
    FOR k IN
        SELECT pc.relid::pg_catalog.regclass::pg_catalog.text AS tab,
               CASE WHEN pc.relid OPERATOR(pg_catalog.=) 'memmie.content_storage'::pg_catalog.regclass
                      OR NOT EXISTS (SELECT FROM pg_catalog.pg_attribute a
                                     WHERE a.attrelid OPERATOR(pg_catalog.=) pc.relid
                                       AND a.attname OPERATOR(pg_catalog.=) 'user_id' AND NOT a.attisdropped)
                    THEN 'memmie._unrestricted_on_node()'
                    ELSE 'user_id OPERATOR(pg_catalog.=) memmie._bound_user() OR memmie._unrestricted_on_node()' END AS qual
        FROM (SELECT pol.polrelid AS relid FROM pg_catalog.pg_policy pol
              WHERE pol.polname OPERATOR(pg_catalog.=) 'tenant_read'
                AND pg_catalog.pg_get_expr(pol.polqual, pol.polrelid) OPERATOR(pg_catalog.!~~) '%_unrestricted_on_node()%'
                AND NOT EXISTS (SELECT FROM pg_catalog.pg_dist_partition d
                                WHERE d.logicalrelid OPERATOR(pg_catalog.=) pol.polrelid)) pc
    LOOP
        EXECUTE pg_catalog.format('ALTER POLICY tenant_read ON %s USING (%s)', k.tab, k.qual);
        PERFORM memmie._citus_on_workers(pg_catalog.format('ALTER POLICY tenant_read ON %s USING (%s)', k.tab, k.qual));
        changed := changed OPERATOR(pg_catalog.+) 1;
    END LOOP;

    -- The access levels' function grants on every node: a trigger on grantees (a reference
    -- table) grants them on each node's placement (sql/access.sql _grantees_on_node). Made
    -- before placement, so that Citus gives it to every placement.
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_trigger g
                   WHERE g.tgrelid OPERATOR(pg_catalog.=) 'memmie.grantees'::pg_catalog.regclass
                     AND g.tgname OPERATOR(pg_catalog.=) 'grants_on_node') THEN
        CREATE TRIGGER grants_on_node AFTER INSERT OR UPDATE OR DELETE ON memmie.grantees
            FOR EACH ROW EXECUTE FUNCTION memmie._grantees_on_node();
    END IF;
    -- 3b. Triggers with transition tables cannot run on a shard: provider_processing's
    -- cancel_orphan_jobs (statement level) becomes cancel_orphan_job (row level), on the
    -- coordinator and on the workers' copies, before the table is placed (its shards get it).
    PERFORM memmie._citus_on_workers(
        'DROP TRIGGER IF EXISTS cancel_orphan_jobs ON memmie.provider_processing; '
        'CREATE OR REPLACE TRIGGER cancel_orphan_job AFTER DELETE ON memmie.provider_processing '
        'FOR EACH ROW EXECUTE FUNCTION memmie._cancel_orphan_job()');
    DROP TRIGGER IF EXISTS cancel_orphan_jobs ON memmie.provider_processing;
    CREATE OR REPLACE TRIGGER cancel_orphan_job AFTER DELETE ON memmie.provider_processing
        FOR EACH ROW EXECUTE FUNCTION memmie._cancel_orphan_job();

    -- 4. Placement, in dependency order: the reference tables, then user_contexts, then the
    -- tables co-located with it, then content_storage.
    FOR t IN SELECT * FROM (VALUES
        (1, 'memmie.providers', 'reference', NULL),
        (2, 'memmie.provider_versions', 'reference', NULL),
        (3, 'memmie.provider_metrics', 'reference', NULL),
        (3, 'memmie.grantees', 'reference', NULL),
        (4, 'memmie.user_contexts', 'distributed', 'user_id'),
        (5, 'memmie.blobs', 'distributed', 'user_id'),
        (6, 'memmie.blob_versions', 'distributed', 'user_id'),
        (6, 'memmie.blob_snapshots', 'distributed', 'user_id'),
        (6, 'memmie.blob_edges', 'distributed', 'user_id'),
        (7, 'memmie.user_content_refs', 'distributed', 'user_id'),
        (8, 'memmie.deltas', 'distributed', 'user_id'),
        (9, 'memmie.events', 'distributed', 'user_id'),
        (10, 'memmie.provider_processing', 'distributed', 'user_id'),
        (11, 'memmie.jobs', 'distributed', 'user_id'),
        (12, 'memmie.usage_metrics', 'distributed', 'user_id'),
        (13, 'memmie.usage_increments', 'distributed', 'user_id'),
        (14, 'memmie.content_storage', 'by content', 'content_hash')) AS v(n, tab, how, col)
    WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_dist_partition d
                      WHERE d.logicalrelid OPERATOR(pg_catalog.=) v.tab::pg_catalog.regclass)
    ORDER BY n
    LOOP
        IF t.how OPERATOR(pg_catalog.=) 'reference' THEN
            PERFORM pg_catalog.create_reference_table(t.tab::pg_catalog.regclass);
        ELSIF t.tab OPERATOR(pg_catalog.=) 'memmie.user_contexts' OR t.how OPERATOR(pg_catalog.=) 'by content' THEN
            PERFORM pg_catalog.create_distributed_table(t.tab::pg_catalog.regclass, t.col, colocate_with => 'none');
        ELSE
            PERFORM pg_catalog.create_distributed_table(t.tab::pg_catalog.regclass, t.col,
                                                        colocate_with => 'memmie.user_contexts');
        END IF;
        placed := placed OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object(t.tab, t.how);
    END LOOP;

    -- 4b. Citus copies the rows a table held into its shards and leaves them in the
    -- coordinator's table too, where nothing reads them but PostgreSQL's own checks do (a new
    -- partition is checked against the DEFAULT partition's stale rows there): a database that
    -- had data before distribute() (an upgraded one) drops them, before the foreign keys are
    -- made again (the truncation would cascade along them).
    FOR t IN SELECT x.key AS tab FROM pg_catalog.jsonb_each(placed) x LOOP
        PERFORM pg_catalog.truncate_local_data_after_distributing_table(t.tab::pg_catalog.regclass);
    END LOOP;

    -- 5. The foreign keys again, between placed tables.
    FOR k IN SELECT * FROM pg_catalog.jsonb_to_recordset(coalesce(fks, '[]')) AS x(tab text, name text, def text, old text)
             WHERE x.def IS NOT NULL LOOP
        EXECUTE pg_catalog.format('ALTER TABLE %s ADD CONSTRAINT %I %s', k.tab, k.name, k.def);
    END LOOP;

    -- 6. The access levels of the roles granted before: the same privileges on every node
    -- (the functions' EXECUTE on the workers through the trigger above).
    PERFORM memmie._reapply_grants();

    RETURN pg_catalog.jsonb_build_object('placed', placed, 'keys_changed', changed,
        'coordinator_only', pg_catalog.jsonb_build_array());
END
$$;

CREATE TRIGGER zero_counters BEFORE INSERT ON memmie.content_storage
    FOR EACH ROW WHEN (NEW.reference_count <> 0) EXECUTE FUNCTION memmie._zero_counters('content_storage');
CREATE TRIGGER zero_counters BEFORE INSERT ON memmie.user_contexts
    FOR EACH ROW WHEN (NEW.storage_used <> 0 OR NEW.blob_count <> 0)
    EXECUTE FUNCTION memmie._zero_counters('user_contexts');

-- ---------------------------------------------------------------------------------------------
-- Privileges: the new functions are not PUBLIC's; every function that reads or changes users'
-- data runs as the owner (sql/privileges.sql).
DO $$
DECLARE
    f pg_catalog.regprocedure;
BEGIN
    FOR f IN
        SELECT p.oid::pg_catalog.regprocedure FROM pg_catalog.pg_proc p
        WHERE p.pronamespace OPERATOR(pg_catalog.=) 'memmie'::pg_catalog.regnamespace
          AND p.proname OPERATOR(pg_catalog.<>) ALL (ARRAY['sha256', 'jsonb_patch', 'jsonb_diff', '_jsonb_diff']::pg_catalog.name[])
    LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
    FOR f IN
        SELECT p.oid::pg_catalog.regprocedure FROM pg_catalog.pg_proc p
        WHERE p.pronamespace OPERATOR(pg_catalog.=) 'memmie'::pg_catalog.regnamespace
          AND p.proname OPERATOR(pg_catalog.!~) '^_'
          AND p.proname OPERATOR(pg_catalog.<>) ALL (ARRAY['sha256', 'jsonb_patch', 'jsonb_diff']::pg_catalog.name[])
          AND p.prorettype OPERATOR(pg_catalog.<>) 'pg_catalog.trigger'::pg_catalog.regtype
    LOOP
        EXECUTE pg_catalog.format('ALTER FUNCTION %s SECURITY DEFINER', f);
    END LOOP;
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

-- ---------------------------------------------------------------------------------------------
-- Roles set up as the 0.2.0 README said (EXECUTE on every function, DML on every table) keep
-- working unchanged: the block above gave them the new functions as before, and they are
-- recorded with all three levels (the admin level sees every user, as they did). Those broad
-- grants are the DBA's to narrow (CHANGELOG "Upgrading to 0.3.0": revoke_access, then
-- grant_app / grant_worker / grant_admin).
INSERT INTO memmie.grantees (role_name, level)
SELECT DISTINCT a.grantee::pg_catalog.regrole::pg_catalog.name, l.level
FROM pg_catalog.pg_proc p, pg_catalog.aclexplode(p.proacl) a,
     (VALUES ('app'), ('worker'), ('admin')) l (level)
WHERE p.pronamespace OPERATOR(pg_catalog.=) 'memmie'::pg_catalog.regnamespace
  AND p.proname OPERATOR(pg_catalog.=) 'create_blob'
  AND a.privilege_type OPERATOR(pg_catalog.=) 'EXECUTE'
  AND a.grantee OPERATOR(pg_catalog.<>) 0 AND a.grantee OPERATOR(pg_catalog.<>) p.proowner
ON CONFLICT DO NOTHING;

-- Last: every recorded grantee gets what its levels give, the new functions included.
SELECT memmie._reapply_grants();
