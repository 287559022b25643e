-- Idempotency keys (docs/CONTRACT.md, "Retrying safely"): the answer to the first request
-- that carried a key, per caller, kept for 24 hours so a retry gets it again instead of
-- a second effect. A row is written in the same transaction as the effect it answers,
-- so neither can exist without the other; requests in flight are told apart by an
-- advisory lock, not by a row.
CREATE TABLE idempotency_keys (
    workspace_id     bigint      NOT NULL,
    -- The token's `sub`: two callers never share a key.
    subject          text        NOT NULL,
    key              text        NOT NULL,
    -- sha256 of the method, the path and the parsed body: a key reused for another
    -- request is refused rather than answered with the first one's response.
    request_hash     text        NOT NULL,
    response_status  smallint    NOT NULL,
    response_type    text        NOT NULL,
    response_location text,
    response_body    text        NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, subject, key),
    CONSTRAINT idempotency_keys_key_check CHECK (length(key) BETWEEN 1 AND 255),
    CONSTRAINT idempotency_keys_request_hash_check CHECK (request_hash ~ '^[0-9a-f]{64}$')
);

-- The purge's question: which keys are past their 24 hours.
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);

-- Claims a key for this transaction in one round trip: takes its advisory lock unless
-- another transaction holds it (locked = false: that request is in flight), then reads
-- the answer stored for it, if any is younger than `kept`. The read is a statement of
-- its own in a VOLATILE function, so its snapshot is taken after the lock is held and it
-- sees the answer of whichever request held the lock before.
CREATE FUNCTION opsrun_claim_idempotency_key(lock bigint, ws bigint, caller text, given text, kept interval)
RETURNS TABLE (locked boolean, request_hash text, response_status smallint, response_type text,
               response_location text, response_body text)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF NOT pg_try_advisory_xact_lock(lock) THEN
        RETURN QUERY SELECT false, NULL::text, NULL::smallint, NULL::text, NULL::text, NULL::text;
        RETURN;
    END IF;
    RETURN QUERY
        SELECT true, k.request_hash, k.response_status, k.response_type, k.response_location, k.response_body
          FROM idempotency_keys k
         WHERE k.workspace_id = ws AND k.subject = caller AND k.key = given AND k.created_at > now() - kept;
    IF NOT FOUND THEN
        RETURN QUERY SELECT true, NULL::text, NULL::smallint, NULL::text, NULL::text, NULL::text;
    END IF;
END
$$;
