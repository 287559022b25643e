-- POST /v1/runs with a new identity every time: 201.
dofile(os.getenv("BENCH_DIR") .. "/wrk/common.lua")
local counter = 0
function request()
  counter = counter + 1
  local body = '{"type":"inventory_sync","tenant_id":1001,"inputs":{"selection_hash":"bench-' .. prefix .. '-' .. counter .. '"}}'
  return wrk.format("POST", "/v1/runs", headers, body)
end
