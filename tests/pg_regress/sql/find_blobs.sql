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

-- content_type (a MIME pattern), roots_only, order_by, and a cursor that outlives its row.
BEGIN;
CREATE TEMP TABLE kinds AS
SELECT i, (memmie.create_blob('00000000-0000-0000-0000-0000000000d3', convert_to('kind ' || i, 'UTF8'),
           (ARRAY['image/png', 'image/jpeg', 'text/plain; charset=utf-8', 'Text/Markdown', 'application/pdf'])[i % 5 + 1],
           jsonb_build_object('n', i))).id AS id
FROM generate_series(1, 10) i;
-- distinct times (updated_at is the transaction's time otherwise: its trigger held off meanwhile)
ALTER TABLE memmie.blobs DISABLE TRIGGER update_blobs_updated_at;
UPDATE memmie.blobs b SET created_at = '2026-01-01'::timestamptz + make_interval(mins => k.i),
                          updated_at = '2026-06-01'::timestamptz - make_interval(mins => k.i)
FROM kinds k WHERE b.id = k.id;
ALTER TABLE memmie.blobs ENABLE TRIGGER update_blobs_updated_at;
-- children of blob 1 and 2 (a parent through create_blob, and one through add_edge only)
SELECT (memmie.create_blob('00000000-0000-0000-0000-0000000000d3', 'child', 'image/png', '{"n": 11}',
                           parent_blob_id => (SELECT id FROM kinds WHERE i = 1))).id AS child \gset
UPDATE memmie.blobs SET created_at = '2025-01-01' WHERE id = :'child';
SELECT memmie.add_edge((SELECT id FROM kinds WHERE i = 1), (SELECT id FROM kinds WHERE i = 2), 'user', 'link') IS NOT NULL AS edge;
SELECT string_agg(metadata->>'n', ',') AS images FROM memmie.find_blobs('00000000-0000-0000-0000-0000000000d3', content_type => 'image/*');
SELECT string_agg(metadata->>'n', ',') AS png FROM memmie.find_blobs('00000000-0000-0000-0000-0000000000d3', content_type => 'IMAGE/PNG');
SELECT string_agg(metadata->>'n', ',') AS text_plain_any_params FROM memmie.find_blobs('00000000-0000-0000-0000-0000000000d3', content_type => 'text/plain');
SELECT string_agg(metadata->>'n', ',') AS text_any FROM memmie.find_blobs('00000000-0000-0000-0000-0000000000d3', content_type => 'text/*');
SELECT count(*) AS everything FROM memmie.find_blobs('00000000-0000-0000-0000-0000000000d3', content_type => '*/*');
SELECT string_agg(metadata->>'n', ',') AS roots FROM memmie.find_blobs('00000000-0000-0000-0000-0000000000d3', roots_only => true);
SELECT string_agg(metadata->>'n', ',') AS root_images FROM memmie.find_blobs('00000000-0000-0000-0000-0000000000d3', roots_only => true, content_type => 'image/*');
SELECT string_agg(metadata->>'n', ',') AS by_created FROM memmie.find_blobs('00000000-0000-0000-0000-0000000000d3', roots_only => true, order_by => 'created_at', max_rows => 3);
SELECT (memmie.apply_delta((SELECT id FROM kinds WHERE i = 8), '[{"op": "add", "path": "/metadata/edited", "value": true}]')).to_version AS edited_8;
SELECT string_agg(metadata->>'n', ',') AS by_updated FROM memmie.find_blobs('00000000-0000-0000-0000-0000000000d3', roots_only => true, order_by => 'updated_at');
-- pages by updated_at with the cursor's values: the last row of page 1 hard-deleted in between
SELECT string_agg(metadata->>'n', ',') AS upd_page1 FROM memmie.find_blobs('00000000-0000-0000-0000-0000000000d3', roots_only => true, order_by => 'updated_at', max_rows => 4);
SELECT id AS cur_id, updated_at AS cur_at FROM memmie.find_blobs('00000000-0000-0000-0000-0000000000d3', roots_only => true, order_by => 'updated_at', max_rows => 4) OFFSET 3 \gset
SELECT memmie.delete_blob(:'cur_id', hard => true);
SELECT string_agg(metadata->>'n', ',') AS upd_page2 FROM memmie.find_blobs('00000000-0000-0000-0000-0000000000d3', roots_only => true, order_by => 'updated_at', max_rows => 4, page_after => :'cur_id', page_after_at => :'cur_at');
-- the same by created_at: page_after alone needs the row (P0002, with a hint), not with page_after_at
SELECT id AS c_id, created_at AS c_at FROM memmie.find_blobs('00000000-0000-0000-0000-0000000000d3', max_rows => 3) OFFSET 2 \gset
SELECT memmie.delete_blob(:'c_id', hard => true);
SELECT t.err(format($$SELECT memmie.find_blobs('00000000-0000-0000-0000-0000000000d3', page_after => %L)$$, :'c_id')) AS row_gone;
SELECT string_agg(metadata->>'n', ',') AS after_gone_row FROM memmie.find_blobs('00000000-0000-0000-0000-0000000000d3', max_rows => 3, page_after => :'c_id', page_after_at => :'c_at');
-- Errors: 22023.
SELECT t.err($$SELECT memmie.find_blobs('00000000-0000-0000-0000-0000000000d3', order_by => 'name')$$) AS bad_order_by;
SELECT t.err($$SELECT memmie.find_blobs('00000000-0000-0000-0000-0000000000d3', order_by => NULL)$$) AS null_order_by;
SELECT t.err($$SELECT memmie.find_blobs('00000000-0000-0000-0000-0000000000d3', content_type => 'image')$$) AS bad_pattern;
SELECT t.err($$SELECT memmie.find_blobs('00000000-0000-0000-0000-0000000000d3', content_type => 'im*ge/png')$$) AS bad_wildcard;
SELECT t.err($$SELECT memmie.find_blobs('00000000-0000-0000-0000-0000000000d3', content_type => '*/png')$$) AS bad_star_type;
SELECT t.err($$SELECT memmie.find_blobs('00000000-0000-0000-0000-0000000000d3', roots_only => NULL)$$) AS null_roots_only;
SELECT t.err($$SELECT memmie.find_blobs('00000000-0000-0000-0000-0000000000d3', page_after_at => now())$$) AS at_without_id;
ROLLBACK;
