-- pgbench: one create_blob of 1 KiB for the client's user (64 users, spread over the shards)
\set n random(1, 2000000000)
\set u random(1, 64)
SELECT 1 FROM memmie.create_blob(('00000000-0000-4000-8000-' || lpad(:u::text, 12, '0'))::uuid,
                                 convert_to(repeat(md5(:n::text || 'bench'), 32), 'UTF8'), 'text/plain',
                                 '{"title": "bench"}', '{bench}');
