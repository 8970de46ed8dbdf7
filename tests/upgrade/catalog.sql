-- Every object of schema memmie, with its grants, one line each, in a form that does not depend on how it was
-- created (fresh install or upgrade): compared by tests/upgrade/upgrade.sh. The dated
-- partitions of deltas and events (and their indexes) are data, not schema: left out.
SELECT line FROM (
    SELECT format('relation %s kind=%s options=%s acl=%s', c.relname, c.relkind, c.reloptions, c.relacl) AS line
    FROM pg_class c WHERE c.relnamespace = 'memmie'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
    UNION ALL
    SELECT format('column %s.%s #%s %s notnull=%s default=%s storage=%s', c.relname, a.attname,
                  row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum),
                  format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid), a.attstorage)
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE c.relnamespace = 'memmie'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm') AND a.attnum > 0 AND NOT a.attisdropped
    UNION ALL
    SELECT format('schema %s acl=%s', n.nspname, n.nspacl) FROM pg_namespace n WHERE n.nspname = 'memmie'
    UNION ALL
    SELECT format('constraint %s.%s %s', c.conrelid::regclass, c.conname, pg_get_constraintdef(c.oid))
    FROM pg_constraint c WHERE c.connamespace = 'memmie'::regnamespace
    UNION ALL
    SELECT format('index %s', pg_get_indexdef(i.indexrelid))
    FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relnamespace = 'memmie'::regnamespace
    UNION ALL
    SELECT format('trigger %s', pg_get_triggerdef(t.oid))
    FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
    WHERE c.relnamespace = 'memmie'::regnamespace AND NOT t.tgisinternal
    UNION ALL
    SELECT format('function %s returns %s volatility=%s strict=%s parallel=%s secdef=%s lang=%s config=%s acl=%s body=%s',
                  p.oid::regprocedure, pg_get_function_result(p.oid), p.provolatile, p.proisstrict, p.proparallel,
                  p.prosecdef, l.lanname, p.proconfig, p.proacl, md5(p.prosrc))
    FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang WHERE p.pronamespace = 'memmie'::regnamespace
    UNION ALL
    SELECT format('function-args %s (%s)', p.oid::regprocedure, pg_get_function_arguments(p.oid))
    FROM pg_proc p WHERE p.pronamespace = 'memmie'::regnamespace
    UNION ALL
    SELECT format('view %s %s', c.relname, pg_get_viewdef(c.oid))
    FROM pg_class c WHERE c.relnamespace = 'memmie'::regnamespace AND c.relkind IN ('v', 'm')
    UNION ALL
    SELECT format('sequence %s %s %s %s', s.seqrelid::regclass, format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement)
    FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid WHERE c.relnamespace = 'memmie'::regnamespace
    UNION ALL
    SELECT format('partition %s of %s %s', c.relname, i.inhparent::regclass, pg_get_expr(c.relpartbound, c.oid))
    FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE c.relnamespace = 'memmie'::regnamespace AND c.relkind IN ('r', 'p')
    UNION ALL
    SELECT format('dumped %s %s', x.cfg, x.cond)
    FROM pg_extension e, unnest(e.extconfig::regclass[]::text[], e.extcondition) x(cfg, cond) WHERE e.extname = 'memmie'
    UNION ALL
    SELECT format('member %s', pg_describe_object(d.classid, d.objid, d.objsubid))
    FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
    WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e' AND e.extname = 'memmie'
) x
WHERE line !~ '(deltas|events)_[0-9]{4}_[0-9]{2}'
ORDER BY line;
