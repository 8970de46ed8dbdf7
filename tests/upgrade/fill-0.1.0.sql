-- Data written through the 0.1.0 API, by the application role.
CREATE TABLE public.ids (name text PRIMARY KEY, id uuid);
GRANT ALL ON public.ids TO memmie_upgrade_app;
SET ROLE memmie_upgrade_app;
INSERT INTO public.ids SELECT 'doc', (memmie.create_blob('00000000-0000-0000-0000-00000000aa01', convert_to(repeat('some words ', 50), 'UTF8'), 'text/plain', '{"title": "Doc"}', '{a}')).id;
INSERT INTO public.ids SELECT 'json', (memmie.create_blob('00000000-0000-0000-0000-00000000aa01', '{"n": 1}', 'application/json')).id;
INSERT INTO public.ids SELECT 'child', (memmie.create_blob('00000000-0000-0000-0000-00000000aa01', 'child', 'text/plain', parent_blob_id => (SELECT id FROM public.ids WHERE name = 'doc'))).id;
INSERT INTO public.ids SELECT 'gone', (memmie.create_blob('00000000-0000-0000-0000-00000000aa02', 'gone', 'text/plain')).id;
SELECT memmie.apply_delta((SELECT id FROM public.ids WHERE name = 'json'), '[{"op": "replace", "path": "/content/n", "value": 2}]');
SELECT memmie.update_content((SELECT id FROM public.ids WHERE name = 'doc'), 'new words');
SELECT memmie.delete_blob((SELECT id FROM public.ids WHERE name = 'gone'));
SELECT memmie.revert_blob((SELECT id FROM public.ids WHERE name = 'doc'), 1);
RESET ROLE;
