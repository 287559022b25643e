-- GET /v1/runs, first page of one type, as a browser asks for it: brotli-compressed.
dofile(os.getenv("BENCH_DIR") .. "/wrk/common.lua")
local compressed = { ["Accept-Encoding"] = "br" }
for name, value in pairs(headers) do compressed[name] = value end
function request()
  return wrk.format("GET", "/v1/runs?type=inventory_sync&limit=50", compressed)
end
