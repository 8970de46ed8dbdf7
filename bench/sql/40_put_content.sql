-- put_content (zstd when it pays, one row per hash) vs a plain bytea column with TOAST lz4:
-- a text corpus and random bytes, 64 KiB pieces; time and bytes on disk.
CREATE TABLE bench.corpus (kind text, i int, d bytea);
-- text: PostgreSQL's own function sources and descriptions, cut into 64 KiB pieces with a
-- piece number in front so that every piece is distinct
WITH t AS (SELECT convert_to(string_agg(coalesce(prosrc, '') || ' ' || proname, E'\n'), 'UTF8') AS d FROM pg_proc),
     big AS (SELECT d || d || d || d AS d FROM t)
INSERT INTO bench.corpus
SELECT 'text corpus', g, convert_to(g::text, 'UTF8') || substring(big.d FROM 1 + ((g * 65536) % greatest(length(big.d) - 65536, 1)) FOR 65536)
FROM big, generate_series(1, 160) g;
INSERT INTO bench.corpus SELECT 'random bytes', g, bench.noise(65536, 5000 + g) FROM generate_series(1, 160) g;
SELECT kind, count(*), sum(length(d)) AS bytes FROM bench.corpus GROUP BY kind ORDER BY kind;

CREATE TABLE bench.lz4 (h text, d bytea COMPRESSION lz4);

CREATE FUNCTION bench.put_memmie(k text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM memmie.content_storage c USING bench.corpus b WHERE b.kind = k AND c.content_hash = memmie.sha256(b.d);
    PERFORM memmie.put_content(d, 'application/octet-stream') FROM bench.corpus WHERE kind = k;
END $$;
CREATE FUNCTION bench.put_lz4(k text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE bench.lz4;
    INSERT INTO bench.lz4 SELECT encode(sha256(d), 'hex'), d FROM bench.corpus WHERE kind = k;
END $$;

SELECT bench.record('store 160 x 64 KiB', v.variant, k.kind, format('SELECT %s(%L)', v.fn, k.kind), '160 pieces (incl. clearing)', 3)
FROM (VALUES ('text corpus'), ('random bytes')) k(kind),
     (VALUES ('memmie.put_content (zstd/none)', 'bench.put_memmie'), ('bytea COMPRESSION lz4 + sha256', 'bench.put_lz4')) v(variant, fn);

-- bytes on disk after one load of each into freshly emptied tables
CREATE TABLE bench.disk (kind text, variant text, bytes bigint);
DELETE FROM memmie.content_storage WHERE reference_count = 0;
VACUUM FULL memmie.content_storage;
SELECT bench.put_memmie('text corpus'), bench.put_lz4('text corpus');
INSERT INTO bench.disk VALUES
    ('text corpus', 'memmie content_storage', pg_total_relation_size('memmie.content_storage')),
    ('text corpus', 'bytea lz4', pg_total_relation_size('bench.lz4'));
DELETE FROM memmie.content_storage WHERE reference_count = 0;
VACUUM FULL memmie.content_storage;
SELECT bench.put_memmie('random bytes'), bench.put_lz4('random bytes');
INSERT INTO bench.disk VALUES
    ('random bytes', 'memmie content_storage', pg_total_relation_size('memmie.content_storage')),
    ('random bytes', 'bytea lz4', pg_total_relation_size('bench.lz4'));
SELECT kind, variant, pg_size_pretty(bytes) AS on_disk, bytes FROM bench.disk ORDER BY kind, variant;
DELETE FROM memmie.content_storage WHERE reference_count = 0;
