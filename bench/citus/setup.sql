-- One JSON blob per user (64 users) for apply_delta.sql; its ids in a table of this node.
CREATE SCHEMA bench_citus;
CREATE TABLE bench_citus.blobs (u int PRIMARY KEY, id uuid NOT NULL);
INSERT INTO bench_citus.blobs
SELECT u, (memmie.create_blob(('00000000-0000-4000-8000-' || lpad(u::text, 12, '0'))::uuid,
                              convert_to('{"n": 0}', 'UTF8'), 'application/json', '{"n": 0}')).id
FROM generate_series(1, 64) u;
