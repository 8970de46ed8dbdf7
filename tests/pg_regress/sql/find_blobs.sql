-- find_blobs: one user's blobs, newest first, filters, keyset pagination.
BEGIN;
CREATE TEMP TABLE made AS
SELECT i, (memmie.create_blob('00000000-0000-0000-0000-0000000000d1', convert_to('blob ' || i, 'UTF8'), 'text/plain',
           jsonb_build_object('title', CASE WHEN i % 3 = 0 THEN 'Quarterly report ' || i ELSE 'Note ' || i END,
                              'n', i, 'kind', CASE WHEN i % 2 = 0 THEN 'even' ELSE 'odd' END)
             || CASE WHEN i % 4 = 0 THEN '{"description": "about revenue"}' ELSE '{}' END::jsonb,
           CASE WHEN i % 5 = 0 THEN '{five,all}'::text[] ELSE '{all}' END,
           created_by => CASE WHEN i % 6 = 0 THEN 'importer' ELSE 'user' END)).id AS id
FROM generate_series(1, 12) i;
-- Same transaction, same created_at: the id breaks ties; make created_at distinct instead.
UPDATE memmie.blobs b SET created_at = '2026-01-01'::timestamptz + make_interval(mins => m.i)
FROM made m WHERE b.id = m.id;
SELECT (memmie.create_blob('00000000-0000-0000-0000-0000000000d2', 'other user', 'text/plain',
                          '{"title": "Quarterly report"}', '{all}')).id IS NOT NULL AS other_user;

SELECT array_agg(metadata->>'n' ORDER BY ord) AS newest_first
FROM memmie.find_blobs('00000000-0000-0000-0000-0000000000d1') WITH ORDINALITY f(id, user_id, content_hash, content_size, content_type, version, is_latest, parent_blob_id, root_blob_id, depth, created_by, metadata, tags, created_at, updated_at, deleted_at, ord);
SELECT string_agg(metadata->>'n', ',') AS tagged_five FROM memmie.find_blobs('00000000-0000-0000-0000-0000000000d1', tags => '{five}');
SELECT string_agg(metadata->>'n', ',') AS by_importer FROM memmie.find_blobs('00000000-0000-0000-0000-0000000000d1', created_by => 'importer');
SELECT string_agg(metadata->>'n', ',') AS even FROM memmie.find_blobs('00000000-0000-0000-0000-0000000000d1', metadata_contains => '{"kind": "even"}');
SELECT string_agg(metadata->>'n', ',') AS reports FROM memmie.find_blobs('00000000-0000-0000-0000-0000000000d1', text_query => 'quarterly reports');
SELECT string_agg(metadata->>'n', ',') AS revenue_not_report FROM memmie.find_blobs('00000000-0000-0000-0000-0000000000d1', text_query => 'revenue -quarterly');
SELECT string_agg(metadata->>'n', ',') AS combined FROM memmie.find_blobs('00000000-0000-0000-0000-0000000000d1', tags => '{all}', metadata_contains => '{"kind": "even"}', text_query => 'report');

-- Keyset pagination: pages of 5 cover everything once, also with inserts between pages.
SELECT string_agg(metadata->>'n', ',') AS page1 FROM memmie.find_blobs('00000000-0000-0000-0000-0000000000d1', max_rows => 5);
SELECT id AS last1 FROM memmie.find_blobs('00000000-0000-0000-0000-0000000000d1', max_rows => 5) OFFSET 4 \gset
SELECT (memmie.create_blob('00000000-0000-0000-0000-0000000000d1', 'newest', 'text/plain', '{"n": 99}')).id IS NOT NULL AS inserted;
SELECT string_agg(metadata->>'n', ',') AS page2 FROM memmie.find_blobs('00000000-0000-0000-0000-0000000000d1', page_after => :'last1', max_rows => 5);
SELECT id AS last2 FROM memmie.find_blobs('00000000-0000-0000-0000-0000000000d1', page_after => :'last1', max_rows => 5) OFFSET 4 \gset
SELECT string_agg(metadata->>'n', ',') AS page3 FROM memmie.find_blobs('00000000-0000-0000-0000-0000000000d1', page_after => :'last2', max_rows => 5);

-- Deleted blobs only when asked.
SELECT memmie.delete_blob(id) FROM made WHERE i = 12;
SELECT count(*) AS live FROM memmie.find_blobs('00000000-0000-0000-0000-0000000000d1', max_rows => 100);
SELECT count(*) AS all_rows FROM memmie.find_blobs('00000000-0000-0000-0000-0000000000d1', include_deleted => true, max_rows => 100);

-- Errors.
SELECT t.err($$SELECT memmie.find_blobs(NULL)$$);
SELECT t.err($$SELECT memmie.find_blobs('00000000-0000-0000-0000-0000000000d1', max_rows => 0)$$);
SELECT t.err($$SELECT memmie.find_blobs('00000000-0000-0000-0000-0000000000d1', metadata_contains => '[1]')$$);
SELECT t.err($$SELECT memmie.find_blobs('00000000-0000-0000-0000-0000000000d1', page_after => '00000000-0000-0000-0000-000000000000')$$);
SELECT count(*) AS malformed_query_is_fine FROM memmie.find_blobs('00000000-0000-0000-0000-0000000000d1', text_query => '"unbalanced & | !');
ROLLBACK;
