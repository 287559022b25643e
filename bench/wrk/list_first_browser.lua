-- GET /v1/runs, first page of one type, with Chromium's Accept-Encoding (gzip comes first,
-- so that is what it gets).
dofile(os.getenv("BENCH_DIR") .. "/wrk/common.lua")
local browser = { ["Accept-Encoding"] = "gzip, deflate, br, zstd" }
for name, value in pairs(headers) do browser[name] = value end
function request()
  return wrk.format("GET", "/v1/runs?type=inventory_sync&limit=50", browser)
end
