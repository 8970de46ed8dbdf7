-- pgbench: apply_delta as an application does it, the session bound to the blob's user per
-- transaction (memmie.user_id: the blob is found on that user's shard, not looked for on all)
\set n random(1, 2000000000)
\set u random(1, 64)
BEGIN;
SELECT set_config('memmie.user_id', '00000000-0000-4000-8000-' || lpad(:u::text, 12, '0'), true);
SELECT 1 FROM memmie.apply_delta((SELECT id FROM bench_citus.blobs WHERE u = :u),
                                 ('[{"op": "replace", "path": "/metadata/n", "value": ' || :n || '}]')::jsonb);
END;
