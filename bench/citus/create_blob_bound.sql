-- pgbench: create_blob as an application does it, the session bound to its user per transaction
-- (memmie.user_id: the calls inside route to that user's shards without looking for it)
\set n random(1, 2000000000)
\set u random(1, 64)
BEGIN;
SELECT set_config('memmie.user_id', '00000000-0000-4000-8000-' || lpad(:u::text, 12, '0'), true);
SELECT 1 FROM memmie.create_blob(('00000000-0000-4000-8000-' || lpad(:u::text, 12, '0'))::uuid,
                                 convert_to(repeat(md5(:n::text || 'bench'), 32), 'UTF8'), 'text/plain',
                                 '{"title": "bench"}', '{bench}');
END;
