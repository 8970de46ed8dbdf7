-- memmie.check(): recomputes what memmie keeps incrementally and compares. Each row says what
-- was checked, whether it holds, and (when not) the first offenders.

CREATE FUNCTION memmie._check_row(p_name text, p_bad bigint, p_sample text, p_what text)
RETURNS TABLE (check_name text, ok boolean, detail text)
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT p_name, p_bad = 0,
           CASE WHEN p_bad = 0 THEN p_what
                ELSE format('%s wrong: %s', p_bad, p_sample) END
$$;

-- Every version whose state, replayed from its blob's applied deltas, is not its stored one, and
-- why; and every kept state (blob_snapshots) that is not the replay. One pass over all versions
-- and deltas in (blob, version) order, each delta applied once to the state before it: linear in
-- the deltas (blob_state per version replays from the start, quadratic in a blob's history). The
-- replay starts from null, or, for a squashed history (squash_history), from the snapshot of its
-- first version, the only state it has no deltas for. A delta that cannot be applied is reported
-- (with the error) at its version, and that blob's later versions are not compared: check()
-- reports a bad blob, it does not fail.
CREATE FUNCTION memmie._replay_mismatches()
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

CREATE FUNCTION memmie.check()
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
