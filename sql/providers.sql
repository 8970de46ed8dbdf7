-- Providers: the transformers that run outside the database. Every registered version is kept
-- in provider_versions; providers holds the current one.

-- A MIME type pattern of supported_types: "type/subtype", "type/*" or "*/*".
CREATE FUNCTION memmie._check_mime_pattern(p text) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF p = '*/*' THEN
        RETURN;
    ELSIF strpos(rtrim(p, '*'), '*') > 0 OR (p LIKE '%*' AND p NOT LIKE '%/*') THEN
        RAISE EXCEPTION 'invalid content type pattern "%": expected type/subtype, type/* or */*', p
            USING ERRCODE = '22023';
    ELSIF p LIKE '%/*' THEN
        PERFORM memmie._check_mime(left(p, -2) || '/x');
    ELSE
        PERFORM memmie._check_mime(p);
    END IF;
END
$$;

-- Whether provider p takes content of this type and size.
CREATE FUNCTION memmie._provider_accepts(p memmie.providers, p_type text, p_size bigint)
RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT (p.max_input_size IS NULL OR p_size OPERATOR(pg_catalog.<=) p.max_input_size)
       AND (pg_catalog.cardinality(p.supported_types) OPERATOR(pg_catalog.=) 0
            OR EXISTS (SELECT FROM pg_catalog.unnest(p.supported_types) pat
                       WHERE pat OPERATOR(pg_catalog.=) '*/*'
                          OR pg_catalog.lower(pat) OPERATOR(pg_catalog.=) pg_catalog.lower(pg_catalog.split_part(p_type, ';', 1))
                          OR (pat OPERATOR(pg_catalog.~~) '%/*'
                              AND pg_catalog.lower(pg_catalog.left(pat, -1)) OPERATOR(pg_catalog.=)
                                  (pg_catalog.lower(pg_catalog.split_part(p_type, '/', 1)) OPERATOR(pg_catalog.||) '/'))))
$$;

-- The value of key k of a definition, checked against the JSON type it must have.
CREATE FUNCTION memmie._def_field(def jsonb, k text, want text, required boolean DEFAULT false)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v jsonb := def -> k;
BEGIN
    IF v IS NULL OR jsonb_typeof(v) = 'null' THEN
        IF required THEN
            RAISE EXCEPTION 'provider definition needs "%"', k USING ERRCODE = '22023';
        END IF;
        RETURN NULL;
    END IF;
    IF want = 'schema' THEN
        IF jsonb_typeof(v) NOT IN ('object', 'boolean') THEN
            RAISE EXCEPTION 'provider definition: "%" must be a JSON Schema (object or boolean), got %',
                k, jsonb_typeof(v) USING ERRCODE = '22023';
        END IF;
        PERFORM memmie._check_json_schema(v, format('provider definition: "%s"', k));
    ELSIF want = 'integer' THEN
        IF jsonb_typeof(v) <> 'number' OR v::text !~ '^[0-9]{1,18}$' THEN
            RAISE EXCEPTION 'provider definition: "%" must be a non-negative integer, got %', k, v
                USING ERRCODE = '22023';
        END IF;
    ELSIF want = 'string' THEN
        IF jsonb_typeof(v) <> 'string' OR v #>> '{}' = '' THEN
            RAISE EXCEPTION 'provider definition: "%" must be a non-empty string, got %', k, v
                USING ERRCODE = '22023';
        END IF;
    ELSIF jsonb_typeof(v) <> want THEN
        RAISE EXCEPTION 'provider definition: "%" must be a JSON %, got %', k, want, jsonb_typeof(v)
            USING ERRCODE = '22023';
    END IF;
    IF want = 'array' AND jsonb_path_exists(v, '$[*] ? (@.type() != "string")') THEN
        RAISE EXCEPTION 'provider definition: "%" must be an array of strings', k USING ERRCODE = '22023';
    END IF;
    RETURN v;
END
$$;

-- The definition as a providers row (validated; config checked against config_schema: MM004).
CREATE FUNCTION memmie._provider_from_definition(def jsonb) RETURNS memmie.providers
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    p       memmie.providers;
    unknown text;
    pat     text;
    t       text;
    field   text;
    max_len int;
BEGIN
    IF def IS NULL OR jsonb_typeof(def) <> 'object' THEN
        RAISE EXCEPTION 'provider definition must be a JSON object, got %', coalesce(jsonb_typeof(def), 'NULL')
            USING ERRCODE = '22023';
    END IF;
    SELECT string_agg(format('"%s"', k), ', ' ORDER BY k) INTO unknown
    FROM jsonb_object_keys(def) k
    WHERE k NOT IN ('id', 'name', 'description', 'category', 'version', 'workflow_id', 'config',
                    'trigger_events', 'supported_types', 'max_input_size', 'timeout_seconds',
                    'input_schema', 'output_schema', 'config_schema', 'processing_rules', 'status',
                    'author', 'license', 'documentation_url');
    IF unknown IS NOT NULL THEN
        RAISE EXCEPTION 'provider definition has unknown keys: %', unknown USING ERRCODE = '22023';
    END IF;
    -- the lengths are checked on the text, before it is assigned to p's varchar fields (which
    -- would refuse a longer one with 22001)
    t := memmie._def_field(def, 'id', 'string', true) #>> '{}';
    IF length(t) > 255 OR t = 'user' THEN
        RAISE EXCEPTION 'invalid provider id "%": 1 to 255 characters, and not "user"', t
            USING ERRCODE = '22023';
    END IF;
    p.id := t;
    FOR field, max_len IN VALUES ('name', 255), ('version', 50), ('category', 100), ('workflow_id', 255),
                                 ('author', 255), ('license', 100) LOOP
        t := memmie._def_field(def, field, 'string', field IN ('name', 'version')) #>> '{}';
        IF length(t) > max_len THEN
            RAISE EXCEPTION 'provider definition: "%" must be at most % characters, got %', field, max_len, length(t)
                USING ERRCODE = '22023';
        END IF;
    END LOOP;
    p.name := def ->> 'name';
    p.version := def ->> 'version';
    p.category := def ->> 'category';
    p.workflow_id := def ->> 'workflow_id';
    p.author := def ->> 'author';
    p.license := def ->> 'license';
    p.description := memmie._def_field(def, 'description', 'string') #>> '{}';
    p.documentation_url := memmie._def_field(def, 'documentation_url', 'string') #>> '{}';
    p.config := coalesce(memmie._def_field(def, 'config', 'object'), '{}');
    p.trigger_events := ARRAY(SELECT jsonb_array_elements_text(
                                  coalesce(memmie._def_field(def, 'trigger_events', 'array'), '[]')));
    p.supported_types := ARRAY(SELECT jsonb_array_elements_text(
                                   coalesce(memmie._def_field(def, 'supported_types', 'array'), '[]')));
    FOREACH pat IN ARRAY p.supported_types LOOP
        PERFORM memmie._check_mime_pattern(pat);
    END LOOP;
    p.max_input_size := (memmie._def_field(def, 'max_input_size', 'integer') #>> '{}')::bigint;
    p.timeout_seconds := coalesce((memmie._def_field(def, 'timeout_seconds', 'integer') #>> '{}')::bigint, 30);
    IF p.timeout_seconds < 1 OR p.timeout_seconds > 86400 THEN
        RAISE EXCEPTION 'provider definition: "timeout_seconds" must be between 1 and 86400, got %',
            p.timeout_seconds USING ERRCODE = '22023';
    END IF;
    p.input_schema := memmie._def_field(def, 'input_schema', 'schema');
    p.output_schema := memmie._def_field(def, 'output_schema', 'schema');
    p.config_schema := memmie._def_field(def, 'config_schema', 'schema');
    p.processing_rules := coalesce(memmie._def_field(def, 'processing_rules', 'object'), '{}');
    IF p.processing_rules ? 'max_retries'
       AND (p.processing_rules -> 'max_retries')::text !~ '^[0-9]{1,4}$' THEN
        RAISE EXCEPTION 'provider definition: processing_rules.max_retries must be an integer from 0 to 9999'
            USING ERRCODE = '22023';
    END IF;
    -- content_changes_only: dispatch skips a blob.updated whose content is that of the version
    -- before (a tag or metadata edit); delete_with_parent: soft-deleting a blob soft-deletes the
    -- blobs this provider derived from it (see delete_blob)
    FOREACH field IN ARRAY ARRAY['content_changes_only', 'delete_with_parent'] LOOP
        IF p.processing_rules ? field AND jsonb_typeof(p.processing_rules -> field) <> 'boolean' THEN
            RAISE EXCEPTION 'provider definition: processing_rules.% must be true or false, got %',
                field, p.processing_rules -> field USING ERRCODE = '22023';
        END IF;
    END LOOP;
    p.status := coalesce(memmie._def_field(def, 'status', 'string') #>> '{}', 'active');
    IF p.status NOT IN ('active', 'inactive', 'deprecated') THEN
        RAISE EXCEPTION 'invalid provider status "%": expected active, inactive or deprecated', p.status
            USING ERRCODE = '22023';
    END IF;
    IF p.config_schema IS NOT NULL THEN
        PERFORM memmie._validate_json(p.config_schema, p.config, format('config of provider %s', p.id));
    END IF;
    RETURN p;
END
$$;

CREATE FUNCTION memmie.register_provider(definition jsonb) RETURNS memmie.providers
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    p     memmie.providers := memmie._provider_from_definition(definition);
    known jsonb;
    cur   memmie.providers;
BEGIN
    -- one registration of an id at a time
    PERFORM pg_advisory_xact_lock(hashtextextended('memmie.provider:' || p.id, 0));
    SELECT v.definition INTO known FROM memmie.provider_versions v
    WHERE v.provider_id = p.id AND v.version = p.version;
    IF FOUND THEN
        IF known IS DISTINCT FROM definition THEN
            RAISE EXCEPTION 'version % of provider % is already registered with another definition', p.version, p.id
                USING ERRCODE = '22023', HINT = 'register the changed definition under a new version';
        END IF;
    END IF;
    SELECT * INTO cur FROM memmie.providers x WHERE x.id = p.id FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO memmie.providers (id, name, description, category, version, workflow_id, config,
                                      trigger_events, supported_types, max_input_size,
                                      timeout_seconds, input_schema, output_schema, config_schema,
                                      processing_rules, status, author, license, documentation_url)
        VALUES (p.id, p.name, p.description, p.category, p.version, p.workflow_id, p.config,
                p.trigger_events, p.supported_types, p.max_input_size, p.timeout_seconds,
                p.input_schema, p.output_schema, p.config_schema, p.processing_rules, p.status,
                p.author, p.license, p.documentation_url)
        RETURNING * INTO cur;
    ELSIF known IS NULL OR cur.version <> p.version THEN
        UPDATE memmie.providers x
        SET name = p.name, description = p.description, category = p.category, version = p.version,
            workflow_id = p.workflow_id, config = p.config, trigger_events = p.trigger_events,
            supported_types = p.supported_types, max_input_size = p.max_input_size,
            timeout_seconds = p.timeout_seconds, input_schema = p.input_schema,
            output_schema = p.output_schema, config_schema = p.config_schema,
            processing_rules = p.processing_rules, status = p.status, author = p.author,
            license = p.license, documentation_url = p.documentation_url
        WHERE x.id = p.id
        RETURNING * INTO cur;
    END IF;
    IF known IS NULL THEN
        INSERT INTO memmie.provider_versions (provider_id, version, definition)
        VALUES (p.id, p.version, definition);
    END IF;
    RETURN cur;
END
$$;

CREATE FUNCTION memmie.set_provider_status(provider_id text, status text) RETURNS memmie.providers
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    p memmie.providers;
BEGIN
    PERFORM memmie._require(set_provider_status.provider_id, 'provider_id');
    IF set_provider_status.status IS NULL
       OR set_provider_status.status NOT IN ('active', 'inactive', 'deprecated') THEN
        RAISE EXCEPTION 'invalid provider status "%": expected active, inactive or deprecated',
            set_provider_status.status USING ERRCODE = '22023';
    END IF;
    UPDATE memmie.providers x SET status = set_provider_status.status
    WHERE x.id = set_provider_status.provider_id
    RETURNING * INTO p;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'provider % does not exist', set_provider_status.provider_id USING ERRCODE = 'P0002';
    END IF;
    RETURN p;
END
$$;
