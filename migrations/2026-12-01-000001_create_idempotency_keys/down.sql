DROP FUNCTION opsrun_claim_idempotency_key(bigint, bigint, text, text, interval);
DROP TABLE idempotency_keys;
