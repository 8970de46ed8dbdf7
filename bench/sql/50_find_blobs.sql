-- find_blobs on 100,000 blobs (10 users x 10,000): every filter served by an index, page latency.
-- The user queried (3) has matches for every filter: urgent 1%, invoice 5%, importer 3.3%,
-- 'quarterly report' 2% of all blobs, all of them user 3's.
CREATE FUNCTION bench.uid(i int) RETURNS uuid LANGUAGE sql IMMUTABLE AS
$$ SELECT ('00000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid $$;
-- Committed in batches of 1,000, as an application would load them.
CREATE PROCEDURE bench.load_blobs(n int) LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1..n LOOP
        PERFORM memmie.create_blob(bench.uid(1 + i % 10), convert_to('blob ' || i, 'UTF8'), 'text/plain',
            jsonb_build_object('title', CASE WHEN i % 50 = 2 THEN 'Quarterly report ' || i ELSE 'Note ' || i END,
                               'kind', CASE WHEN i % 20 = 2 THEN 'invoice' ELSE 'note' END, 'n', i),
            CASE WHEN i % 100 = 2 THEN ARRAY['urgent', 'all'] ELSE ARRAY['all'] END,
            created_by => CASE WHEN i % 30 = 2 THEN 'importer' ELSE 'user' END);
        IF i % 1000 = 0 THEN
            COMMIT;
        END IF;
    END LOOP;
END $$;
\timing on
CALL bench.load_blobs(100000);
\timing off
-- steady state: autovacuum would have flushed the GIN pending lists and set visibility
VACUUM ANALYZE memmie.blobs;

CREATE TABLE bench.find_cases (name text, tags text[], created_by text, metadata_contains jsonb, text_query text, include_deleted boolean);
INSERT INTO bench.find_cases VALUES
    ('recency', NULL, NULL, NULL, NULL, false),
    ('tags', '{urgent}', NULL, NULL, NULL, false),
    ('provider', NULL, 'importer', NULL, NULL, false),
    ('metadata @>', NULL, NULL, '{"kind": "invoice"}', NULL, false),
    ('full text', NULL, NULL, NULL, 'quarterly report', false),
    ('include_deleted', NULL, NULL, NULL, NULL, true);

-- Plans: the exact query find_blobs runs, with the same parameters.
CREATE TABLE bench.find_plans (name text, plan text);
DO $$
DECLARE
    c record;
    line text;
    plan text;
BEGIN
    FOR c IN SELECT * FROM bench.find_cases LOOP
        plan := '';
        FOR line IN EXECUTE 'EXPLAIN (COSTS OFF) ' || memmie._find_blobs_sql(
                c.tags IS NOT NULL, c.created_by IS NOT NULL, false, c.metadata_contains IS NOT NULL,
                c.text_query IS NOT NULL, c.include_deleted, false)
            USING bench.uid(3), c.tags, c.created_by::varchar, NULL::uuid, c.metadata_contains, c.text_query,
                  NULL::timestamptz, NULL::uuid, 50
        LOOP
            plan := plan || line || E'\n';
        END LOOP;
        INSERT INTO bench.find_plans VALUES (c.name, plan);
    END LOOP;
END $$;
\pset format unaligned
SELECT '### ' || name || E'\n' || plan FROM bench.find_plans;
\pset format aligned

-- Page latency: median of 20 calls, first page and a later page.
SELECT bench.record('find_blobs page (100k blobs)', c.name, (SELECT count(*) FROM memmie.find_blobs(bench.uid(3), tags => c.tags, created_by => c.created_by, metadata_contains => c.metadata_contains, text_query => c.text_query, include_deleted => c.include_deleted)) || ' rows',
                    format('SELECT count(*) FROM memmie.find_blobs(bench.uid(3), tags => %L, created_by => %L, metadata_contains => %L, text_query => %L, include_deleted => %L)',
                           c.tags, c.created_by, c.metadata_contains, c.text_query, c.include_deleted),
                    'one page', 20)
FROM bench.find_cases c;
SELECT id AS page_after FROM memmie.find_blobs(bench.uid(3), max_rows => 50) OFFSET 49 \gset
SELECT bench.record('find_blobs page (100k blobs)', 'recency, page 2 (page_after)', '50 rows',
                    format('SELECT count(*) FROM memmie.find_blobs(bench.uid(3), page_after => %L)', :'page_after'),
                    'one page', 20);
