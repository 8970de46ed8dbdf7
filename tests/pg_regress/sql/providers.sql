-- Providers: register_provider (validation, versions), set_provider_status, type matching.
BEGIN;
SELECT id, name, version, config, trigger_events, supported_types, max_input_size, timeout_seconds, status
FROM memmie.register_provider('{"id": "summarizer", "name": "Summarizer", "version": "1.0",
    "category": "nlp", "config": {"model": "small", "temperature": 0.2},
    "config_schema": {"type": "object", "required": ["model"], "additionalProperties": false,
                      "properties": {"model": {"enum": ["small", "large"]},
                                     "temperature": {"type": "number", "minimum": 0, "maximum": 2}}},
    "output_schema": {"type": "object", "required": ["children"]},
    "trigger_events": ["blob.created", "blob.updated"], "supported_types": ["text/*", "application/json"],
    "max_input_size": 1000, "timeout_seconds": 5}');
-- the same definition again: nothing changes
SELECT version, (SELECT count(*) FROM memmie.provider_versions WHERE provider_id = 'summarizer') AS versions
FROM memmie.register_provider('{"id": "summarizer", "name": "Summarizer", "version": "1.0",
    "category": "nlp", "config": {"model": "small", "temperature": 0.2},
    "config_schema": {"type": "object", "required": ["model"], "additionalProperties": false,
                      "properties": {"model": {"enum": ["small", "large"]},
                                     "temperature": {"type": "number", "minimum": 0, "maximum": 2}}},
    "output_schema": {"type": "object", "required": ["children"]},
    "trigger_events": ["blob.created", "blob.updated"], "supported_types": ["text/*", "application/json"],
    "max_input_size": 1000, "timeout_seconds": 5}');
-- a changed definition under the same version is refused; under a new version it becomes current
SELECT t.err($$SELECT memmie.register_provider('{"id": "summarizer", "name": "Summarizer", "version": "1.0", "config": {"model": "large"}}')$$) AS same_version_changed;
-- text fields longer than their columns: 22023 naming the field (not 22001 from the column)
SELECT t.err(format($$SELECT memmie.register_provider(%L)$$,
    jsonb_build_object('id', 'long', 'name', repeat('n', 256), 'version', '1'))) AS long_name;
SELECT t.err(format($$SELECT memmie.register_provider(%L)$$,
    jsonb_build_object('id', 'long', 'name', 'n', 'version', '1', 'category', repeat('c', 101)))) AS long_category;
SELECT t.err(format($$SELECT memmie.register_provider(%L)$$,
    jsonb_build_object('id', repeat('i', 256), 'name', 'n', 'version', '1'))) AS long_id;
SELECT version, config, status FROM memmie.register_provider(
    '{"id": "summarizer", "name": "Summarizer 2", "version": "2.0", "config": {"model": "large"},
      "trigger_events": ["blob.created"], "supported_types": ["text/markdown"]}');
SELECT provider_id, version, definition ->> 'name' AS name FROM memmie.provider_versions ORDER BY 1, 2;
SELECT id, name, version, supported_types, max_input_size, timeout_seconds FROM memmie.providers;

-- validation: 22023 for malformed definitions, MM004 for a config its schema refuses
SELECT t.err($$SELECT memmie.register_provider(NULL)$$) AS null_definition;
SELECT t.err($$SELECT memmie.register_provider('[]')$$) AS array_definition;
SELECT t.err($$SELECT memmie.register_provider('{"name": "x", "version": "1"}')$$) AS no_id;
SELECT t.err($$SELECT memmie.register_provider('{"id": "p", "version": "1"}')$$) AS no_name;
SELECT t.err($$SELECT memmie.register_provider('{"id": "p", "name": "x"}')$$) AS no_version;
SELECT t.err($$SELECT memmie.register_provider('{"id": "user", "name": "x", "version": "1"}')$$) AS reserved_id;
SELECT t.err($$SELECT memmie.register_provider('{"id": 7, "name": "x", "version": "1"}')$$) AS numeric_id;
SELECT t.err($$SELECT memmie.register_provider('{"id": "p", "name": "x", "version": "1", "colour": "red"}')$$) AS unknown_key;
SELECT t.err($$SELECT memmie.register_provider('{"id": "p", "name": "x", "version": "1", "config": [1]}')$$) AS array_config;
SELECT t.err($$SELECT memmie.register_provider('{"id": "p", "name": "x", "version": "1", "trigger_events": "blob.created"}')$$) AS scalar_events;
SELECT t.err($$SELECT memmie.register_provider('{"id": "p", "name": "x", "version": "1", "trigger_events": [1]}')$$) AS numeric_event;
SELECT t.err($$SELECT memmie.register_provider('{"id": "p", "name": "x", "version": "1", "supported_types": ["text"]}')$$) AS bad_type_pattern;
SELECT t.err($$SELECT memmie.register_provider('{"id": "p", "name": "x", "version": "1", "supported_types": ["*/plain"]}')$$) AS bad_wildcard;
SELECT t.err($$SELECT memmie.register_provider('{"id": "p", "name": "x", "version": "1", "max_input_size": -1}')$$) AS negative_size;
SELECT t.err($$SELECT memmie.register_provider('{"id": "p", "name": "x", "version": "1", "timeout_seconds": 0}')$$) AS zero_timeout;
SELECT t.err($$SELECT memmie.register_provider('{"id": "p", "name": "x", "version": "1", "status": "paused"}')$$) AS bad_status;
SELECT t.err($$SELECT memmie.register_provider('{"id": "p", "name": "x", "version": "1", "output_schema": {"type": "string", "pattern": "^a"}}')$$) AS unsupported_keyword;
SELECT t.err($$SELECT memmie.register_provider('{"id": "p", "name": "x", "version": "1", "input_schema": {"type": "strng"}}')$$) AS bad_schema_type;
SELECT t.err($$SELECT memmie.register_provider('{"id": "p", "name": "x", "version": "1", "config_schema": 5}')$$) AS scalar_schema;
SELECT t.err($$SELECT memmie.register_provider('{"id": "p", "name": "x", "version": "1", "processing_rules": {"max_retries": "many"}}')$$) AS bad_max_retries;
SELECT t.err($$SELECT memmie.register_provider('{"id": "p", "name": "x", "version": "1", "config": {"model": "huge"},
    "config_schema": {"type": "object", "properties": {"model": {"enum": ["small", "large"]}}}}')$$) AS config_not_in_enum;
SELECT t.err($$SELECT memmie.register_provider('{"id": "p", "name": "x", "version": "1", "config": {},
    "config_schema": {"type": "object", "required": ["model"]}}')$$) AS config_missing_required;
SELECT t.err($$SELECT memmie.register_provider('{"id": "p", "name": "x", "version": "1", "config": {"n": 1.5},
    "config_schema": {"properties": {"n": {"type": "integer"}}}}')$$) AS config_wrong_type;
SELECT t.err($$SELECT memmie.register_provider('{"id": "p", "name": "x", "version": "1", "config": {"tags": ["a", "a"]},
    "config_schema": {"properties": {"tags": {"type": "array", "uniqueItems": true, "items": {"type": "string"}}}}}')$$) AS config_repeats;
SELECT count(*) AS refused_left_nothing FROM memmie.providers WHERE id = 'p';

-- set_provider_status
SELECT id, status FROM memmie.set_provider_status('summarizer', 'deprecated');
SELECT t.err($$SELECT memmie.set_provider_status('summarizer', 'paused')$$) AS bad_status;
SELECT t.err($$SELECT memmie.set_provider_status('nobody', 'active')$$) AS missing_provider;
SELECT t.err($$SELECT memmie.set_provider_status(NULL, 'active')$$) AS null_provider;
SELECT t.err($$SELECT memmie.set_provider_status('summarizer', NULL)$$) AS null_status;
SELECT id, status FROM memmie.set_provider_status('summarizer', 'inactive');
SELECT id, status FROM memmie.set_provider_status('summarizer', 'active');

-- type matching: exact (parameters ignored, case-insensitive), type/*, */*, size limit
SELECT pat, ct, size, memmie._provider_accepts(p, ct, size) AS accepts
FROM (VALUES ('{text/markdown}'::text[], 'text/markdown'), ('{text/markdown}', 'Text/Markdown; charset=utf-8'),
             ('{text/markdown}', 'text/plain'), ('{text/*}', 'text/plain'), ('{text/*}', 'application/json'),
             ('{*/*}', 'image/png'), ('{}', 'image/png')) v(pat, ct)
CROSS JOIN (VALUES (10::bigint), (1001)) s(size)
CROSS JOIN LATERAL (SELECT (row('x', 'x', NULL, NULL, '1', NULL, '{}', '{}', pat, 1000, 30, NULL, NULL, NULL, '{}',
                                'active', NULL, NULL, NULL, now(), now())::memmie.providers).*) p0
CROSS JOIN LATERAL (SELECT p0::memmie.providers AS p) p1
ORDER BY 1, 2, 3;
ROLLBACK;
