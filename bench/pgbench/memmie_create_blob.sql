\set n random(1, 2000000000)
SELECT 1 FROM memmie.create_blob(('00000000-0000-0000-0000-' || lpad(:client_id::text, 12, '0'))::uuid,
                                 convert_to(repeat(md5(:n::text || 'bench'), 32), 'UTF8'), 'text/plain',
                                 '{"title": "bench"}', '{bench}');
