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
