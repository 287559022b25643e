-- The platform's rows in opsrun's shapes, converted inside the database: during adopt
-- every row goes through opsrun_adopt_convert (the fill, and the platform's own writes
-- under a trigger), and after adopt the platform's writes still do until the
-- compatibility trigger is removed (docs/CUTOVER.md). src/commands/adopt/rows.rs judges the same
-- rows in Rust for `adopt --check`; tests/api/adopt.rs checks that the two agree.
-- opsrun_adopt_type() comes before this file: it is generated from the catalog.

-- Redacts credentials, replaces control characters and cuts to max_chars characters:
-- the rules a worker's reported failure goes through (src/domain/failures.rs), with
-- ASCII word boundaries and whitespace spelled out so the locale changes nothing.
CREATE OR REPLACE FUNCTION opsrun_adopt_sanitize(message text, max_chars integer) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT left(regexp_replace(regexp_replace(regexp_replace(regexp_replace(regexp_replace(regexp_replace(
        message,
        '(?<![A-Za-z0-9_])bearer[\t\n\v\f\r ]+[A-Za-z0-9._~+/-]+=*', 'Bearer [redacted]', 'gi'),
        '(?<![A-Za-z0-9_])eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*', '[redacted-jwt]', 'g'),
        '(?<![A-Za-z0-9_])([a-z0-9_-]*(?:password|passwd|secret|token|api[_-]?key)[a-z0-9_-]*)([\t\n\v\f\r ]*[=:][\t\n\v\f\r ]*)("[^"]*"|''[^'']*''|[^\t\n\v\f\r &;,"'']+)',
        '\1\2[redacted]', 'gi'),
        '[\n\r\t]', ' ', 'g'),
        '[\u0001-\u001f\u007f-\u009f]', '', 'g'),
        '^ +| +$', '', 'g'), max_chars)
$$;

-- A JSON value as text: a string as itself, null as '', anything else as its JSON.
CREATE OR REPLACE FUNCTION opsrun_adopt_text(value jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE jsonb_typeof(value) WHEN 'string' THEN value #>> '{}' WHEN 'null' THEN '' ELSE coalesce(value::text, '') END
$$;

-- One failure entry of the platform's in opsrun's stored shape.
CREATE OR REPLACE FUNCTION opsrun_adopt_failure(entry jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    given_code text;
    reason text;
    platform_reason text;
BEGIN
    IF jsonb_typeof(entry) IS DISTINCT FROM 'object' THEN
        RETURN jsonb_build_object('code', 'unknown', 'reason_code', 'unknown',
                                  'message', opsrun_adopt_sanitize(opsrun_adopt_text(entry), 120));
    END IF;
    given_code := CASE WHEN jsonb_typeof(entry -> 'code') IN ('string', 'number')
                       THEN opsrun_adopt_sanitize(opsrun_adopt_text(entry -> 'code'), 64) END;
    reason := entry ->> 'reason_code';
    platform_reason := CASE WHEN jsonb_typeof(entry -> 'platform_reason_code') = 'string'
                            THEN entry ->> 'platform_reason_code' END;
    IF jsonb_typeof(entry -> 'reason_code') IS DISTINCT FROM 'string' OR NOT reason = ANY (opsrun_adopt_reason_codes()) THEN
        IF platform_reason IS NULL AND coalesce(jsonb_typeof(entry -> 'reason_code'), 'null') <> 'null' THEN
            platform_reason := opsrun_adopt_sanitize(opsrun_adopt_text(entry -> 'reason_code'), 64);
        END IF;
        reason := 'unknown';
    END IF;
    -- Absent keys (no item, a reason of the taxonomy's own) are stripped as nulls.
    RETURN jsonb_strip_nulls(jsonb_build_object(
        'code', coalesce(nullif(given_code, ''), 'unknown'), 'reason_code', reason,
        'message', opsrun_adopt_sanitize(opsrun_adopt_text(entry -> 'message'), 120),
        'item', nullif(opsrun_adopt_sanitize(opsrun_adopt_text(entry -> 'item'), 200), ''),
        'platform_reason_code', nullif(platform_reason, '')));
END
$$;

-- failure_summary in opsrun's stored shape: {"items": [at most 100], "dropped": n}.
CREATE OR REPLACE FUNCTION opsrun_adopt_failures(summary jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    items jsonb;
    dropped bigint := 0;
BEGIN
    CASE coalesce(jsonb_typeof(summary), 'null')
        WHEN 'null' THEN
            items := '[]';
        WHEN 'array' THEN
            items := summary;
        WHEN 'object' THEN
            IF jsonb_typeof(summary -> 'items') = 'array' THEN
                items := summary -> 'items';
                IF jsonb_typeof(summary -> 'dropped') = 'number' AND (summary ->> 'dropped')::numeric >= 0
                   AND (summary ->> 'dropped')::numeric = trunc((summary ->> 'dropped')::numeric)
                   AND (summary ->> 'dropped')::numeric <= 9007199254740991 THEN
                    dropped := (summary ->> 'dropped')::bigint;
                END IF;
            ELSIF summary = '{}' THEN
                items := '[]';
            ELSIF summary ?| ARRAY['code', 'reason_code', 'message'] THEN
                items := jsonb_build_array(summary);
            ELSE
                RAISE EXCEPTION 'opsrun adopt: failure_summary is an object that is neither a list of failures nor one failure'
                    USING ERRCODE = 'check_violation';
            END IF;
        ELSE
            RAISE EXCEPTION 'opsrun adopt: failure_summary is a JSON %', jsonb_typeof(summary)
                USING ERRCODE = 'check_violation';
    END CASE;
    IF jsonb_array_length(items) = 0 THEN
        RETURN jsonb_build_object('items', items, 'dropped', dropped);
    END IF;
    RETURN jsonb_build_object(
        'items', coalesce((SELECT jsonb_agg(opsrun_adopt_failure(e.entry) ORDER BY e.position)
                             FROM jsonb_array_elements(items) WITH ORDINALITY AS e(entry, position)
                            WHERE e.position <= 100), '[]'::jsonb),
        'dropped', dropped + greatest(jsonb_array_length(items) - 100, 0));
END
$$;

-- A JSON object column: null and the empty list (how the platform's PHP writes an empty
-- object) become {}; anything else but an object is refused.
CREATE OR REPLACE FUNCTION opsrun_adopt_object(value jsonb, column_name text) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    IF value IS NULL OR value = 'null' OR value = '[]' THEN
        RETURN '{}';
    ELSIF jsonb_typeof(value) = 'object' THEN
        RETURN value;
    END IF;
    RAISE EXCEPTION 'opsrun adopt: % is a JSON %', column_name, jsonb_typeof(value) USING ERRCODE = 'check_violation';
END
$$;

-- summary_counts split into opsrun's counters and what is set aside (another key, or a
-- value that is no count): a count is a non-negative integer, or a string of digits.
CREATE OR REPLACE FUNCTION opsrun_adopt_counts(counts jsonb, OUT kept jsonb, OUT aside jsonb)
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    key text;
    value jsonb;
    number numeric;
BEGIN
    kept := '{}';
    aside := '{}';
    FOR key, value IN SELECT e.key, e.value FROM jsonb_each(opsrun_adopt_object(counts, 'summary_counts')) AS e LOOP
        number := CASE
            WHEN jsonb_typeof(value) = 'number' THEN (value #>> '{}')::numeric
            WHEN jsonb_typeof(value) = 'string' AND value #>> '{}' ~ '^[0-9]{1,16}$' THEN (value #>> '{}')::numeric
        END;
        IF key = ANY (opsrun_adopt_count_keys()) AND number IS NOT NULL AND number >= 0
           AND number = trunc(number) AND number <= 9007199254740991 THEN
            kept := kept || jsonb_build_object(key, number::bigint);
        ELSE
            aside := aside || jsonb_build_object(key, value);
        END IF;
    END LOOP;
END
$$;

-- The identity text of one input value, or NULL when the value is not of its kind
-- (src/domain/inputs.rs).
CREATE OR REPLACE FUNCTION opsrun_adopt_input_text(kind text, value jsonb) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    number numeric;
    at timestamptz;
BEGIN
    CASE kind
        WHEN 'id' THEN
            IF jsonb_typeof(value) <> 'number' THEN RETURN NULL; END IF;
            number := (value #>> '{}')::numeric;
            IF number > 0 AND number = trunc(number) AND number < 9223372036854775808 THEN
                RETURN number::bigint::text;
            END IF;
        WHEN 'key' THEN
            IF jsonb_typeof(value) = 'string' AND btrim(value #>> '{}') <> '' AND char_length(value #>> '{}') <= 200
               AND value #>> '{}' !~ '[\u0001-\u001f\u007f-\u009f]' THEN
                RETURN value #>> '{}';
            END IF;
        WHEN 'trigger' THEN
            IF value #>> '{}' IN ('scheduled', 'run_now', 'retry') AND jsonb_typeof(value) = 'string' THEN
                RETURN value #>> '{}';
            END IF;
        WHEN 'timestamp' THEN
            IF jsonb_typeof(value) = 'string'
               AND value #>> '{}' ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$' THEN
                BEGIN
                    at := (value #>> '{}')::timestamptz;
                EXCEPTION WHEN others THEN
                    RETURN NULL;
                END;
                RETURN to_char(date_trunc('minute', at AT TIME ZONE 'UTC'), 'YYYY-MM-DD"T"HH24:MI":00Z"');
            END IF;
    END CASE;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION opsrun_adopt_sha256(material text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT encode(sha256(convert_to(material, 'UTF8')), 'hex')
$$;

-- One platform row in opsrun's shapes (src/commands/adopt/rows.rs judges the same). Raises, with
-- the finding's name, where a person must decide. `kept_apart_from` names the run that
-- keeps an identity this row shares (adopt --keep-duplicates-apart, strict-once repeats).
CREATE OR REPLACE FUNCTION opsrun_adopt_convert(
    run_id bigint, workspace bigint, tenant bigint, given_type text, status text, outcome text,
    platform_hash text, counts jsonb, failures jsonb, given_context jsonb, kept_apart_from bigint,
    OUT run_type text, OUT run_identity_hash text, OUT identity_policy text, OUT summary_counts jsonb,
    OUT failure_summary jsonb, OUT context jsonb)
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    catalog record;
    split record;
    active boolean := status IN ('queued', 'running');
    adopted jsonb := '{}';
    aside jsonb;
    material text;
    input text;
    input_name text;
    input_text text;
    refusal text;
    run_trigger text;
    has_scheduled_for boolean := false;
    well_formed boolean := platform_hash ~ '^[0-9a-f]{64}$';
    computed text;
BEGIN
    -- Assignments, not SELECT … INTO: PL/pgSQL evaluates them without the executor.
    catalog := opsrun_adopt_type(given_type);
    IF catalog.canonical IS NULL THEN
        RAISE EXCEPTION 'opsrun adopt: unknown_type: `%` is not an operation type', given_type USING ERRCODE = 'check_violation';
    END IF;
    IF status NOT IN ('queued', 'running', 'completed')
       OR outcome NOT IN ('pending', 'succeeded', 'partially_succeeded', 'failed', 'blocked', 'cancelled') THEN
        RAISE EXCEPTION 'opsrun adopt: unknown_status_or_outcome: status `%`, outcome `%`', status, outcome
            USING ERRCODE = 'check_violation';
    END IF;
    IF active = (outcome <> 'pending') THEN
        RAISE EXCEPTION 'opsrun adopt: status_outcome_mismatch: % with outcome %', status, outcome
            USING ERRCODE = 'check_violation';
    END IF;
    run_type := catalog.canonical;
    context := opsrun_adopt_object(given_context, 'context');
    failure_summary := opsrun_adopt_failures(failures);
    split := opsrun_adopt_counts(counts);
    summary_counts := split.kept;
    aside := split.aside;
    IF (catalog.scope = 'tenant') <> (tenant IS NOT NULL) THEN
        RAISE EXCEPTION 'opsrun adopt: scope_mismatch: % %', run_type,
            CASE WHEN tenant IS NULL THEN 'without tenant_id' ELSE 'with tenant_id' END USING ERRCODE = 'check_violation';
    END IF;
    IF given_type <> run_type THEN
        adopted := adopted || jsonb_build_object('platform_type', given_type);
        IF catalog.implied_trigger IS NOT NULL THEN
            context := context || jsonb_build_object('trigger', catalog.implied_trigger);
        END IF;
    END IF;
    IF aside <> '{}' THEN
        adopted := adopted || jsonb_build_object('summary_counts',
            coalesce(CASE WHEN jsonb_typeof(context #> '{adopted,summary_counts}') = 'object'
                          THEN context #> '{adopted,summary_counts}' END, '{}') || aside);
    END IF;

    -- The identity under opsrun's rules, from the inputs the context carries.
    material := CASE WHEN catalog.scope = 'tenant' THEN 't:' || tenant ELSE 'w:' || workspace END || '|' || run_type;
    FOREACH input IN ARRAY catalog.inputs LOOP
        input_name := split_part(input, ':', 1);
        IF NOT context ? input_name THEN
            IF split_part(input, ':', 3) = 'always' THEN
                refusal := format('input `%s` is required for %s', input_name, run_type);
                EXIT;
            END IF;
            CONTINUE;
        END IF;
        input_text := opsrun_adopt_input_text(split_part(input, ':', 2), context -> input_name);
        IF input_text IS NULL THEN
            refusal := format('input `%s` is not valid', input_name);
            EXIT;
        END IF;
        material := material || '|' || input_name || '=' || input_text;
        IF split_part(input, ':', 2) = 'trigger' THEN run_trigger := input_text; END IF;
        IF split_part(input, ':', 3) = 'when_scheduled' THEN has_scheduled_for := true; END IF;
    END LOOP;
    IF refusal IS NULL AND run_trigger = 'scheduled' AND NOT has_scheduled_for THEN
        refusal := format('input `scheduled_for` is required for %s', run_type);
    ELSIF refusal IS NULL AND run_trigger IN ('run_now', 'retry') AND has_scheduled_for THEN
        refusal := 'input `scheduled_for` goes only with trigger `scheduled`';
    END IF;

    IF refusal IS NULL THEN
        identity_policy := CASE catalog.rule
            WHEN 'dedupe_active' THEN 'dedupe_active'
            WHEN 'strict_once' THEN 'strict_once'
            ELSE CASE WHEN run_trigger = 'scheduled' THEN 'strict_once' ELSE 'unique_per_click' END
        END;
        IF identity_policy = 'unique_per_click' THEN
            material := material || '|nonce=adopted:' || run_id;
        END IF;
        computed := opsrun_adopt_sha256(material);
        run_identity_hash := CASE WHEN active OR identity_policy = 'strict_once' OR NOT well_formed
                                  THEN computed ELSE platform_hash END;
    ELSIF active OR catalog.rule <> 'dedupe_active' THEN
        RAISE EXCEPTION 'opsrun adopt: identity_not_computable: run %: %', run_id, refusal USING ERRCODE = 'check_violation';
    ELSE
        identity_policy := 'dedupe_active';
        run_identity_hash := CASE WHEN well_formed THEN platform_hash
                                  ELSE opsrun_adopt_sha256(platform_hash || '|adopted:operation_runs:' || run_id) END;
    END IF;

    IF context #> '{adopted,identity_kept_apart_from}' IS NOT NULL THEN
        -- An earlier adopt kept this row apart: it stays apart.
        identity_policy := 'unique_per_click';
        IF NOT well_formed THEN
            run_identity_hash := opsrun_adopt_sha256(run_identity_hash || '|adopted:operation_runs:' || run_id);
        ELSE
            run_identity_hash := platform_hash;
        END IF;
    ELSIF kept_apart_from IS NOT NULL THEN
        identity_policy := 'unique_per_click';
        run_identity_hash := opsrun_adopt_sha256(run_identity_hash || '|adopted:operation_runs:' || run_id);
        adopted := adopted || jsonb_build_object('identity_kept_apart_from', kept_apart_from);
        IF context #> '{adopted,platform_run_identity_hash}' IS NULL THEN
            adopted := adopted || jsonb_build_object('platform_run_identity_hash', platform_hash);
        END IF;
    END IF;
    IF run_identity_hash <> platform_hash AND context #> '{adopted,platform_run_identity_hash}' IS NULL THEN
        adopted := adopted || jsonb_build_object('platform_run_identity_hash', platform_hash);
    END IF;
    IF adopted <> '{}' THEN
        context := jsonb_set(context, '{adopted}',
            CASE WHEN jsonb_typeof(context -> 'adopted') = 'object' THEN context -> 'adopted' ELSE '{}' END || adopted);
    END IF;
END
$$;

-- A timestamp the platform wrote as wall-clock text in `zone`, read on the way in as
-- wall-clock time in the session's zone, read again in `zone`. A value the write left
-- as it was, or set to the transaction's now() (a server-side clock, not text), stays.
CREATE OR REPLACE FUNCTION opsrun_adopt_wall_clock(value timestamptz, previous timestamptz, zone text)
RETURNS timestamptz LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN value IS NULL OR value IS NOT DISTINCT FROM previous OR value = now()
                     OR zone = current_setting('TimeZone') THEN value
                ELSE (value AT TIME ZONE current_setting('TimeZone')) AT TIME ZONE zone END
$$;
