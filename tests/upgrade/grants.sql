-- The grants README "Privileges" documents for an application role, as a DBA gives them after
-- CREATE EXTENSION (applied to both the fresh and the upgraded database).
GRANT USAGE ON SCHEMA memmie TO memmie_upgrade_app;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA memmie TO memmie_upgrade_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA memmie TO memmie_upgrade_app;
