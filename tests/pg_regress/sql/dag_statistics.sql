-- dag_statistics (issue 12, finding 5): linear in the edges, and the same rows as the recursive
-- definition it replaced.
BEGIN;
SET LOCAL session_replication_role = replica;  -- bulk rows: no per-row triggers, no FK checks
-- A small graph with every shape: two roots sharing a child, a diamond, a deleted blob in a
-- chain (its children become roots), a shortcut, an isolated blob.
CREATE TEMP TABLE g (i int PRIMARY KEY, id uuid, deleted boolean DEFAULT false);
INSERT INTO g SELECT i, md5('memmie dag_statistics ' || i)::uuid, i = 7 FROM generate_series(1, 12) i;
INSERT INTO memmie.blobs (id, user_id, content_hash, content_size, content_type, deleted_at)
SELECT id, '00000000-0000-0000-0000-0000000000d5', repeat('0', 64), 0, 'text/plain',
       CASE WHEN deleted THEN now() END FROM g;
INSERT INTO memmie.blob_edges (parent_blob_id, child_blob_id, provider_id, transform_type, user_id)
SELECT p.id, c.id, 'stats', 't', '00000000-0000-0000-0000-0000000000d5'::uuid
FROM (VALUES (1, 3), (2, 3), (3, 4), (4, 5), (4, 6), (5, 8), (6, 8), (8, 7), (7, 9), (9, 10), (1, 10),
             (3, 8)) e(p, c)
JOIN g p ON p.i = e.p JOIN g c ON c.i = e.c;
SET LOCAL session_replication_role = origin;
REFRESH MATERIALIZED VIEW memmie.dag_statistics;
SELECT g.i AS root, s.total_nodes, s.max_depth, s.unique_levels
FROM memmie.dag_statistics s JOIN g ON g.id = s.root_id ORDER BY 1;
-- the recursive definition 0.2.0 had gives the same rows
WITH RECURSIVE live AS (SELECT id FROM memmie.blobs WHERE deleted_at IS NULL),
roots AS (SELECT l.id FROM live l WHERE NOT EXISTS (
              SELECT FROM memmie.blob_edges e JOIN live p ON p.id = e.parent_blob_id WHERE e.child_blob_id = l.id)),
dag_tree AS (SELECT r.id AS root_id, r.id AS node_id, 0 AS level FROM roots r
             UNION
             SELECT t.root_id, e.child_blob_id, t.level + 1 FROM dag_tree t
             JOIN memmie.blob_edges e ON e.parent_blob_id = t.node_id JOIN live c ON c.id = e.child_blob_id),
old AS (SELECT root_id, count(DISTINCT node_id)::bigint AS total_nodes, max(level) AS max_depth,
               count(DISTINCT level)::int AS unique_levels FROM dag_tree GROUP BY root_id)
SELECT (SELECT count(*) FROM (SELECT * FROM old EXCEPT SELECT * FROM memmie.dag_statistics) x) AS only_old,
       (SELECT count(*) FROM (SELECT * FROM memmie.dag_statistics EXCEPT SELECT * FROM old) x) AS only_new;

-- A ladder i -> i+1, i -> i+2 of 20,000 blobs: a recursive query keeping (root, node, level)
-- rows makes ~10^8 of them (0.2.0: 10,000 blobs took 104 s and 4.3 GB).
SET LOCAL session_replication_role = replica;
CREATE TEMP TABLE ladder (i int PRIMARY KEY, id uuid);
INSERT INTO ladder SELECT i, md5('memmie ladder ' || i)::uuid FROM generate_series(0, 19999) i;
INSERT INTO memmie.blobs (id, user_id, content_hash, content_size, content_type)
SELECT id, '00000000-0000-0000-0000-0000000000d5', repeat('0', 64), 0, 'text/plain' FROM ladder;
INSERT INTO memmie.blob_edges (parent_blob_id, child_blob_id, provider_id, transform_type, user_id)
SELECT p.id, c.id, 'ladder', 'step', '00000000-0000-0000-0000-0000000000d5'::uuid FROM ladder p JOIN ladder c ON c.i = p.i + 1
UNION ALL
SELECT p.id, c.id, 'ladder', 'step', '00000000-0000-0000-0000-0000000000d5'::uuid FROM ladder p JOIN ladder c ON c.i = p.i + 2;
SET LOCAL session_replication_role = origin;
SET LOCAL statement_timeout = '30s';
REFRESH MATERIALIZED VIEW memmie.dag_statistics;
SELECT total_nodes, max_depth, unique_levels FROM memmie.dag_statistics
WHERE root_id = (SELECT id FROM ladder WHERE i = 0);
ROLLBACK;
