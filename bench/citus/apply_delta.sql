-- pgbench: one apply_delta (a metadata edit) of one of 64 blobs of 64 users
\set n random(1, 2000000000)
\set u random(1, 64)
SELECT 1 FROM memmie.apply_delta((SELECT id FROM bench_citus.blobs WHERE u = :u),
                                 ('[{"op": "replace", "path": "/metadata/n", "value": ' || :n || '}]')::jsonb);
