-- Memory: 100,000 apply_delta calls (each its own transaction) in one session, and the peak of
-- get_content on 64 MiB contents.
CREATE FUNCTION bench.proc_status(field text) RETURNS bigint LANGUAGE sql AS $$
    SELECT (regexp_match(pg_read_file('/proc/' || pg_backend_pid() || '/status'), field || ':\s+(\d+) kB'))[1]::bigint * 1024
$$;
CREATE PROCEDURE bench.many_deltas(b uuid, n int) LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1..n LOOP
        PERFORM memmie.apply_delta(b, jsonb_build_array(jsonb_build_object('op', 'replace', 'path', '/metadata/n', 'value', i)));
        COMMIT;
    END LOOP;
END $$;
CREATE TABLE bench.memory (what text, bytes bigint, note text);

SELECT (memmie.create_blob('00000000-0000-0000-0000-00000000aaaa', convert_to('{"doc": [1, 2, 3]}', 'UTF8'),
        'application/json', '{"n": 0}')).id AS mb \gset
CALL bench.many_deltas(:'mb', 1000);
SELECT bench.proc_status('RssAnon') AS anon0 \gset
SELECT sum(total_bytes) AS ctx0 FROM pg_backend_memory_contexts \gset
SELECT clock_timestamp() AS t0 \gset
CALL bench.many_deltas(:'mb', 100000);
SELECT extract(epoch FROM clock_timestamp() - :'t0'::timestamptz) AS secs \gset
INSERT INTO bench.memory VALUES
    ('RssAnon growth over 100,000 apply_delta', bench.proc_status('RssAnon') - :anon0, round(:secs::numeric, 1) || ' s for the 100,000 calls'),
    ('memory-context growth over 100,000 apply_delta', (SELECT sum(total_bytes) FROM pg_backend_memory_contexts) - :ctx0, 'pg_backend_memory_contexts');

-- 64 MiB contents, incompressible and compressible; the peak is read in a fresh session.
SELECT memmie.put_content(string_agg(bench.noise(1048576, 9000 + i), ''::bytea)) AS h_rand FROM generate_series(1, 64) i \gset
SELECT memmie.put_content(convert_to(repeat('memmie keeps text. ', 3532012), 'UTF8') || bench.noise(64 * 1048576 - 3532012 * 19, 77)) AS h_text \gset
SELECT content_hash = :'h_text' AS text, compression, original_size, compressed_size FROM memmie.content_storage
WHERE content_hash IN (:'h_rand', :'h_text');
\c
SELECT memmie.sha256('load the library') IS NOT NULL AS loaded;
SELECT bench.proc_status('VmHWM') AS hwm0, bench.proc_status('RssShmem') AS shm0 \gset
SELECT length(memmie.get_content(:'h_rand')) AS bytes;
INSERT INTO bench.memory VALUES
    ('peak RSS growth, get_content of 64 MiB (none)', bench.proc_status('VmHWM') - :hwm0, 'VmHWM delta'),
    ('  of which shared buffers newly mapped', bench.proc_status('RssShmem') - :shm0, 'RssShmem delta'),
    ('  private peak (VmHWM - RssShmem deltas)', bench.proc_status('VmHWM') - :hwm0 - (bench.proc_status('RssShmem') - :shm0), 'compare with 3 x 64 MiB');
\c
SELECT memmie.sha256('load the library') IS NOT NULL AS loaded;
SELECT bench.proc_status('VmHWM') AS hwm0, bench.proc_status('RssShmem') AS shm0 \gset
SELECT length(memmie.get_content(:'h_text')) AS bytes;
INSERT INTO bench.memory VALUES
    ('peak RSS growth, get_content of 64 MiB (zstd)', bench.proc_status('VmHWM') - :hwm0, 'VmHWM delta'),
    ('  of which shared buffers newly mapped', bench.proc_status('RssShmem') - :shm0, 'RssShmem delta'),
    ('  private peak (VmHWM - RssShmem deltas)', bench.proc_status('VmHWM') - :hwm0 - (bench.proc_status('RssShmem') - :shm0), 'compare with 3 x 64 MiB');
SELECT what, pg_size_pretty(bytes) AS growth, round(bytes / 67108864.0, 2) AS x_64mib, note FROM bench.memory;
