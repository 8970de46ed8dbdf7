-- ---------------------------------------------------------------------------------------------
-- Privileges (the access levels themselves: sql/access.sql).
--
-- Nothing but the pure functions is executable by PUBLIC; roles get EXECUTE through the levels
-- (grant_app, grant_worker, grant_admin). Every function that reads or changes users' data runs
-- as the extension's owner (SECURITY DEFINER; each pins search_path = pg_catalog, pg_temp), so
-- that no level needs a write privilege on any table, and checks for itself whose data the call
-- may touch (memmie._scope). Trigger functions and the internal helpers (names starting with
-- "_") are never granted: they run inside memmie's functions, as the owner.
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
    FOR f IN
        SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
        WHERE p.pronamespace = 'memmie'::regnamespace
          AND p.proname !~ '^_'
          AND p.proname NOT IN ('sha256', 'jsonb_patch', 'jsonb_diff')
          AND p.prorettype <> 'pg_catalog.trigger'::pg_catalog.regtype
    LOOP
        EXECUTE format('ALTER FUNCTION %s SECURITY DEFINER', f);
    END LOOP;
END
$$;
