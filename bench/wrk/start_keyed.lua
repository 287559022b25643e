-- POST /v1/runs with a new identity and a new Idempotency-Key every time: 201, and the
-- answer stored for retries.
dofile(os.getenv("BENCH_DIR") .. "/wrk/common.lua")
local counter = 0
function request()
  counter = counter + 1
  local body = '{"type":"inventory_sync","tenant_id":1001,"inputs":{"selection_hash":"bench-keyed-' .. prefix .. '-' .. counter .. '"}}'
  local keyed = {}
  for name, value in pairs(headers) do keyed[name] = value end
  keyed["Idempotency-Key"] = "bench-" .. prefix .. "-" .. counter
  return wrk.format("POST", "/v1/runs", keyed, body)
end
