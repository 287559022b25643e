-- POST /v1/runs with an identity that is already active: 409.
dofile(os.getenv("BENCH_DIR") .. "/wrk/common.lua")
local body = '{"type":"inventory_sync","tenant_id":1001,"inputs":{"selection_hash":"bench-refused"}}'
function request()
  return wrk.format("POST", "/v1/runs", headers, body)
end
