-- ---------------------------------------------------------------------------------------------
-- Privileges: nothing that writes (or reads users' data) is executable by PUBLIC; grant
-- EXECUTE to the application's role (see README). Pure functions stay public.
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
        WHERE p.pronamespace = 'memmie'::regnamespace
          AND p.proname NOT IN ('sha256', 'jsonb_patch', 'jsonb_diff', '_jsonb_diff')
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
END
$$;
