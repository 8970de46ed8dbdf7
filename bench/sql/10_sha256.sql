-- memmie.sha256 vs built-in sha256(): 64 B, 4 KiB, 1 MiB, 64 MiB, same rows, same run.
CREATE TABLE bench.hash_data (size text, bytes bigint, d bytea);
ALTER TABLE bench.hash_data ALTER COLUMN d SET STORAGE EXTERNAL;
INSERT INTO bench.hash_data
SELECT s.size, s.bytes, bench.noise(s.bytes, i)
FROM (VALUES ('64 B', 64, 20000), ('4 KiB', 4096, 5000), ('1 MiB', 1048576, 40)) s(size, bytes, n),
     generate_series(1, s.n) i;
INSERT INTO bench.hash_data
SELECT '64 MiB', 67108864, string_agg(bench.noise(1048576, 1000 + i), ''::bytea) FROM generate_series(1, 64) i;
-- detoasting is part of both; warm the cache
SELECT count(*), sum(length(d)) FROM bench.hash_data;

SELECT bench.record('sha256', 'memmie.sha256(d)', size,
                    format('SELECT count(memmie.sha256(d)) FROM bench.hash_data WHERE size = %L', size),
                    count::text || ' rows')
FROM (SELECT size, count(*) FROM bench.hash_data GROUP BY size ORDER BY min(bytes)) s;
SELECT bench.record('sha256', 'encode(sha256(d), ''hex'')', size,
                    format('SELECT count(encode(sha256(d), ''hex'')) FROM bench.hash_data WHERE size = %L', size),
                    count::text || ' rows')
FROM (SELECT size, count(*) FROM bench.hash_data GROUP BY size ORDER BY min(bytes)) s;
SELECT bench.record('sha256', 'sha256(d) (raw bytea)', size,
                    format('SELECT count(sha256(d)) FROM bench.hash_data WHERE size = %L', size),
                    count::text || ' rows')
FROM (SELECT size, count(*) FROM bench.hash_data GROUP BY size ORDER BY min(bytes)) s;
DROP TABLE bench.hash_data;
