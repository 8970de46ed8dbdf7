-- The provenance DAG: derive_blob, add_edge (cycles, users), ancestors, descendants, lineage,
-- dag_stats.
BEGIN;
CREATE TEMP TABLE n (name text PRIMARY KEY, id uuid UNIQUE);
INSERT INTO n SELECT 'root', (memmie.create_blob('00000000-0000-0000-0000-0000000000d1', 'root', 'text/plain')).id;
INSERT INTO n SELECT 'side', (memmie.create_blob('00000000-0000-0000-0000-0000000000d1', 'side', 'text/plain')).id;
INSERT INTO n SELECT 'other', (memmie.create_blob('00000000-0000-0000-0000-0000000000d2', 'other user', 'text/plain')).id;

-- A derived blob: owned by the parents' user, parent/root/depth from the first parent, one
-- edge per parent, a transform delta caused by the first parent's current version.
INSERT INTO n SELECT 'a', (memmie.derive_blob(ARRAY[(SELECT id FROM n WHERE name = 'root')], 'summarizer', 'summary',
                                              'short', 'text/plain', '{"title": "A"}', '{s}')).id;
INSERT INTO n SELECT 'm', (memmie.derive_blob(ARRAY[(SELECT id FROM n WHERE name = 'a'), (SELECT id FROM n WHERE name = 'side')],
                                              'merger', 'merge', 'merged', 'text/plain')).id;
SELECT nb.name, b.user_id, b.depth, p.name AS parent, r.name AS root, b.created_by, b.metadata, b.tags
FROM memmie.blobs b JOIN n nb ON nb.id = b.id
LEFT JOIN n p ON p.id = b.parent_blob_id LEFT JOIN n r ON r.id = b.root_blob_id
WHERE nb.name IN ('a', 'm') ORDER BY nb.name;
SELECT pn.name AS parent, cn.name AS child, e.provider_id, e.transform_type, e.version_map
FROM memmie.blob_edges e JOIN n pn ON pn.id = e.parent_blob_id JOIN n cn ON cn.id = e.child_blob_id
ORDER BY 1, 2;
SELECT nb.name, d.operation, d.provider_id, d.from_version, d.to_version, d.status,
       d.caused_by_delta_id = (SELECT v.delta_id FROM memmie.blob_versions v JOIN n ON n.id = v.blob_id
                               WHERE (n.name = 'root' AND nb.name = 'a') OR (n.name = 'a' AND nb.name = 'm')) AS caused_by_parent
FROM memmie.deltas d JOIN n nb ON nb.id = d.blob_id WHERE nb.name IN ('a', 'm') ORDER BY 1;
SELECT e.event_type, e.payload ->> 'operation' AS operation, e.payload ->> 'created_by' AS created_by
FROM memmie.events e JOIN n ON n.id = e.aggregate_id WHERE n.name = 'm';
-- an explicit cause
INSERT INTO n SELECT 'c', (memmie.derive_blob(ARRAY[(SELECT id FROM n WHERE name = 'm')], 'p', 't', 'c', 'text/plain',
                           caused_by_delta_id => (SELECT v.delta_id FROM memmie.blob_versions v JOIN n ON n.id = v.blob_id WHERE n.name = 'side'))).id;
SELECT d.caused_by_delta_id = (SELECT v.delta_id FROM memmie.blob_versions v JOIN n ON n.id = v.blob_id WHERE n.name = 'side') AS explicit_cause
FROM memmie.deltas d JOIN n ON n.id = d.blob_id WHERE n.name = 'c';

-- derive_blob refuses bad input, and leaves nothing behind
SELECT count(*) AS blobs_before FROM memmie.blobs;
SELECT t.err($$SELECT memmie.derive_blob('{}', 'p', 't', 'x', 'text/plain')$$) AS no_parents;
SELECT t.err($$SELECT memmie.derive_blob(NULL, 'p', 't', 'x', 'text/plain')$$) AS null_parents;
SELECT t.err(format($$SELECT memmie.derive_blob(ARRAY[%L::uuid, NULL], 'p', 't', 'x', 'text/plain')$$, (SELECT id FROM n WHERE name = 'root'))) AS null_parent;
SELECT t.err(format($$SELECT memmie.derive_blob(ARRAY[%L::uuid, %L::uuid], 'p', 't', 'x', 'text/plain')$$,
                    (SELECT id FROM n WHERE name = 'root'), (SELECT id FROM n WHERE name = 'root'))) AS repeated_parent;
SELECT t.err($$SELECT memmie.derive_blob(ARRAY['00000000-0000-0000-0000-00000000dead'::uuid], 'p', 't', 'x', 'text/plain')$$) AS missing_parent;
SELECT t.err(format($$SELECT memmie.derive_blob(ARRAY[%L::uuid, %L::uuid], 'p', 't', 'x', 'text/plain')$$,
                    (SELECT id FROM n WHERE name = 'root'), (SELECT id FROM n WHERE name = 'other'))) AS parents_of_two_users;
SELECT t.err(format($$SELECT memmie.derive_blob(ARRAY[%L::uuid], 'p', 't', 'x', 'text plain')$$, (SELECT id FROM n WHERE name = 'root'))) AS bad_mime;
SELECT t.err(format($$SELECT memmie.derive_blob(ARRAY[%L::uuid], '', 't', 'x', 'text/plain')$$, (SELECT id FROM n WHERE name = 'root'))) AS empty_provider;
SELECT t.err(format($$SELECT memmie.derive_blob(ARRAY[%L::uuid], 'p', NULL, 'x', 'text/plain')$$, (SELECT id FROM n WHERE name = 'root'))) AS null_transform;
SELECT t.err(format($$SELECT memmie.derive_blob(ARRAY[%L::uuid], 'p', 't', 'x', NULL)$$, (SELECT id FROM n WHERE name = 'root'))) AS null_content_type;
SELECT t.err(format($$SELECT memmie.derive_blob(ARRAY[%L::uuid], 'p', 't', NULL, 'text/plain')$$, (SELECT id FROM n WHERE name = 'root'))) AS null_content;
SELECT t.err(format($$SELECT memmie.derive_blob(ARRAY[%L::uuid], 'p', 't', 'x', 'text/plain', '[1]')$$, (SELECT id FROM n WHERE name = 'root'))) AS array_metadata;
SELECT t.err(format($$SELECT memmie.derive_blob(ARRAY[%L::uuid], 'p', 't', 'x', 'text/plain', caused_by_delta_id => '00000000-0000-0000-0000-00000000dead')$$,
                    (SELECT id FROM n WHERE name = 'root'))) AS missing_cause;
SELECT count(*) AS blobs_after FROM memmie.blobs;

-- add_edge: a new edge, idempotent; cycles (also through several edges) are refused with MM003
SELECT (memmie.add_edge((SELECT id FROM n WHERE name = 'side'), (SELECT id FROM n WHERE name = 'c'), 'linker', 'cites', '{"why": "test"}')).metadata;
SELECT (memmie.add_edge((SELECT id FROM n WHERE name = 'side'), (SELECT id FROM n WHERE name = 'c'), 'linker', 'cites', '{"other": 1}')).metadata AS same_edge_again;
SELECT t.err(format($$SELECT memmie.add_edge(%L, %L, 'p', 't')$$, (SELECT id FROM n WHERE name = 'c'), (SELECT id FROM n WHERE name = 'root'))) AS cycle;
SELECT t.err(format($$SELECT memmie.add_edge(%L, %L, 'p', 't')$$, (SELECT id FROM n WHERE name = 'm'), (SELECT id FROM n WHERE name = 'a'))) AS two_node_cycle;
SELECT t.err(format($$SELECT memmie.add_edge(%L, %L, 'p', 't')$$, (SELECT id FROM n WHERE name = 'a'), (SELECT id FROM n WHERE name = 'a'))) AS self_edge;
SELECT t.err(format($$SELECT memmie.add_edge(%L, %L, 'p', 't')$$, (SELECT id FROM n WHERE name = 'root'), (SELECT id FROM n WHERE name = 'other'))) AS other_users_blob;
SELECT t.err(format($$SELECT memmie.add_edge(%L, '00000000-0000-0000-0000-00000000dead', 'p', 't')$$, (SELECT id FROM n WHERE name = 'root'))) AS missing_child;
SELECT t.err(format($$SELECT memmie.add_edge(NULL, %L, 'p', 't')$$, (SELECT id FROM n WHERE name = 'root'))) AS null_parent;
SELECT t.err(format($$SELECT memmie.add_edge(%L, %L, 'p', 't', '"x"')$$, (SELECT id FROM n WHERE name = 'root'), (SELECT id FROM n WHERE name = 'side'))) AS scalar_metadata;
SELECT count(*) AS edges FROM memmie.blob_edges;

-- Traversal: every node once, at its shortest depth (c is reached via m and via side)
SELECT n.name, d.depth FROM memmie.descendants((SELECT id FROM n WHERE name = 'root')) d JOIN n ON n.id = d.blob_id ORDER BY 2, 1;
SELECT n.name, d.depth FROM memmie.descendants((SELECT id FROM n WHERE name = 'root'), 2) d JOIN n ON n.id = d.blob_id ORDER BY 2, 1;
SELECT n.name, a.depth FROM memmie.ancestors((SELECT id FROM n WHERE name = 'c')) a JOIN n ON n.id = a.blob_id ORDER BY 2, 1;
SELECT n.name, a.depth FROM memmie.ancestors((SELECT id FROM n WHERE name = 'c'), 1) a JOIN n ON n.id = a.blob_id ORDER BY 2, 1;
SELECT count(*) AS none FROM memmie.descendants((SELECT id FROM n WHERE name = 'c'), 0);
SELECT t.err($$SELECT memmie.descendants('00000000-0000-0000-0000-00000000dead')$$) AS missing_blob;
SELECT t.err($$SELECT memmie.ancestors(NULL)$$) AS null_blob;
SELECT t.err(format($$SELECT memmie.ancestors(%L, -1)$$, (SELECT id FROM n WHERE name = 'c'))) AS negative_depth;

-- lineage: the blob, its ancestors (negative depth) and descendants, and the edges between them
SELECT n.name, (x ->> 'depth')::int AS depth, x ->> 'created_by' AS created_by
FROM jsonb_array_elements(memmie.lineage((SELECT id FROM n WHERE name = 'm')) -> 'nodes') x
JOIN n ON n.id = (x ->> 'blob_id')::uuid ORDER BY 2, 1;
SELECT pn.name AS parent, cn.name AS child, x ->> 'provider_id' AS provider, x ->> 'transform_type' AS transform
FROM jsonb_array_elements(memmie.lineage((SELECT id FROM n WHERE name = 'm')) -> 'edges') x
JOIN n pn ON pn.id = (x ->> 'parent_blob_id')::uuid JOIN n cn ON cn.id = (x ->> 'child_blob_id')::uuid ORDER BY 1, 2;
SELECT memmie.lineage((SELECT id FROM n WHERE name = 'other')) -> 'edges' AS lone_blob_edges;
SELECT t.err($$SELECT memmie.lineage('00000000-0000-0000-0000-00000000dead')$$) AS missing_blob;

-- dag_stats: the root included at level 0
SELECT * FROM memmie.dag_stats((SELECT id FROM n WHERE name = 'root'));
SELECT * FROM memmie.dag_stats((SELECT id FROM n WHERE name = 'c'));

-- Hard-deleting a blob removes its edges; m and c keep their other parents.
SELECT memmie.delete_blob((SELECT id FROM n WHERE name = 'side'), true);
SELECT n.name, d.depth FROM memmie.descendants((SELECT id FROM n WHERE name = 'root')) d JOIN n ON n.id = d.blob_id ORDER BY 2, 1;
ROLLBACK;

-- A traversal that reaches a large part of the graph reads blob_edges whole (once a level's
-- frontier is 1,024 nodes and a twentieth of the table) instead of looking each node up: the
-- same answers as the lookups (memmie.traversal_work_mem = 0), in both directions, with
-- max_depth, for the cycle check, on edges this transaction wrote; under row-level security it
-- keeps looking up. Graph: 0 -> 1..2000 -> 2001..4000 (k -> 2000 + k) -> 4001, and 20 'merge'
-- shortcuts 0 -> 2000 + k.
BEGIN;
CREATE TEMP TABLE big (i int PRIMARY KEY, id uuid);
INSERT INTO big SELECT i, md5('memmie big dag ' || i)::uuid FROM generate_series(0, 4001) i;
SET LOCAL session_replication_role = replica;  -- bulk rows: no per-row triggers, no FK checks
INSERT INTO memmie.blobs (id, user_id, content_hash, content_size, content_type)
SELECT id, '00000000-0000-0000-0000-0000000000b9', repeat('0', 64), 0, 'text/plain' FROM big;
INSERT INTO memmie.blob_edges (parent_blob_id, child_blob_id, provider_id, transform_type, user_id)
SELECT p.id, c.id, 'big', e.t, '00000000-0000-0000-0000-0000000000b9'::uuid
FROM (SELECT 0 AS p, k AS c, 'derived' AS t FROM generate_series(1, 2000) k
      UNION ALL SELECT k, 2000 + k, 'derived' FROM generate_series(1, 2000) k
      UNION ALL SELECT 0, 2000 + k, 'merge' FROM generate_series(100, 2000, 100) k
      UNION ALL SELECT 2000 + k, 4001, 'derived' FROM generate_series(1, 2000) k) e
JOIN big p ON p.i = e.p JOIN big c ON c.i = e.c;
SET LOCAL session_replication_role = origin;
SELECT count(*) AS big_edges FROM memmie.blob_edges WHERE provider_id = 'big';
CREATE TEMP TABLE walks (how text, what text, blob_id uuid, depth int);
CREATE FUNCTION pg_temp.walk_all(how text) RETURNS void LANGUAGE sql AS $$
    INSERT INTO walks SELECT how, 'descendants of 0', d.* FROM memmie.descendants((SELECT id FROM big WHERE i = 0)) d;
    INSERT INTO walks SELECT how, 'descendants of 0, 2 levels', d.* FROM memmie.descendants((SELECT id FROM big WHERE i = 0), 2) d;
    INSERT INTO walks SELECT how, 'ancestors of 4001', a.* FROM memmie.ancestors((SELECT id FROM big WHERE i = 4001)) a;
    INSERT INTO walks SELECT how, '4001 -> 0 closes a cycle', NULL, memmie._would_cycle((SELECT id FROM big WHERE i = 4001), (SELECT id FROM big WHERE i = 0))::int;
    INSERT INTO walks SELECT how, '0 -> 4001 closes none', NULL, memmie._would_cycle((SELECT id FROM big WHERE i = 0), (SELECT id FROM big WHERE i = 4001))::int;
    INSERT INTO walks SELECT how, '4001 -> 0 closes a cycle (user)', NULL, memmie._would_cycle((SELECT id FROM big WHERE i = 4001), (SELECT id FROM big WHERE i = 0), '00000000-0000-0000-0000-0000000000b9')::int;
    INSERT INTO walks SELECT how, '0 -> 4001 closes none (user)', NULL, memmie._would_cycle((SELECT id FROM big WHERE i = 0), (SELECT id FROM big WHERE i = 4001), '00000000-0000-0000-0000-0000000000b9')::int;
$$;
SET client_min_messages = debug1;
SELECT pg_temp.walk_all('whole table');
RESET client_min_messages;
SET LOCAL memmie.traversal_work_mem = 0;
SELECT pg_temp.walk_all('lookups');
SET LOCAL memmie.traversal_work_mem = '64MB';
SELECT what, count(*) FILTER (WHERE how = 'lookups') AS rows, max(depth) AS max_depth,
       sum(depth) FILTER (WHERE how = 'lookups') AS depth_sum,
       (SELECT count(*) FROM (SELECT blob_id, depth FROM walks w WHERE w.what = x.what AND how = 'lookups'
                              EXCEPT ALL SELECT blob_id, depth FROM walks w WHERE w.what = x.what AND how = 'whole table') d)
     + (SELECT count(*) FROM (SELECT blob_id, depth FROM walks w WHERE w.what = x.what AND how = 'whole table'
                              EXCEPT ALL SELECT blob_id, depth FROM walks w WHERE w.what = x.what AND how = 'lookups') d) AS differences
FROM walks x GROUP BY what ORDER BY what;
-- a table larger than memmie.traversal_work_mem (64kB: 1,820 edges) is looked up node by node
SET LOCAL memmie.traversal_work_mem = '64kB';
SET client_min_messages = debug1;
SELECT count(*) AS nodes, sum(depth) AS depth_sum FROM memmie.descendants((SELECT id FROM big WHERE i = 0));
RESET client_min_messages;
SET LOCAL memmie.traversal_work_mem = '64MB';
-- an app-level role bound to the graph's user: the traversal runs as memmie's owner (no policy
-- applies to it) and reads the table whole all the same; bound to another user, the root is
-- not visible (P0002, as for a blob that does not exist); with no user bound, 42501
CREATE ROLE memmie_dag_reader;
SELECT memmie.grant_app('memmie_dag_reader');
GRANT SELECT ON big TO memmie_dag_reader;
SET ROLE memmie_dag_reader;
SET LOCAL memmie.user_id = '00000000-0000-0000-0000-0000000000b9';
SET client_min_messages = debug1;
SELECT count(*) AS nodes, sum(depth) AS depth_sum FROM memmie.descendants((SELECT id FROM big WHERE i = 0));
RESET client_min_messages;
SELECT count(*) AS edges_visible FROM memmie.blob_edges WHERE provider_id = 'big';
SET LOCAL memmie.user_id = '00000000-0000-0000-0000-0000000000ba';
SAVEPOINT s;
SELECT count(*) FROM memmie.descendants((SELECT id FROM big WHERE i = 0));
ROLLBACK TO s;
SELECT count(*) AS edges_visible FROM memmie.blob_edges WHERE provider_id = 'big';
SET LOCAL memmie.user_id = '';
SELECT count(*) FROM memmie.ancestors((SELECT id FROM big WHERE i = 4001));
ROLLBACK TO s;
RESET ROLE;
ROLLBACK;

-- DAG changes update the user's row once per transaction (it makes a concurrent REPEATABLE READ
-- edge writer fail to serialize; isolation spec edge_cycle_race), not at every edge.
BEGIN;
SELECT (memmie.create_blob('00000000-0000-0000-0000-0000000000b9', 'root', 'text/plain')).id AS r9 \gset
SELECT (memmie.derive_blob(ARRAY[:'r9'::uuid], 'p', 't', 'one', 'text/plain')).id AS c9 \gset
SELECT ctid AS row_after_first FROM memmie.user_contexts WHERE user_id = '00000000-0000-0000-0000-0000000000b9' \gset
SELECT (memmie.derive_blob(ARRAY[:'r9'::uuid], 'p', 't', 'two', 'text/plain')).id AS c10 \gset
SELECT (memmie.derive_blob(ARRAY[:'r9'::uuid], 'p', 't', 'three', 'text/plain')).depth AS third_child;
SELECT (memmie.add_edge(:'c9', :'c10', 'p', 'link')).transform_type AS edge;
SELECT ctid = :'row_after_first' AS row_not_updated_again FROM memmie.user_contexts WHERE user_id = '00000000-0000-0000-0000-0000000000b9';
ROLLBACK;
