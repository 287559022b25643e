-- Shared by the bench scripts: the token and a per-thread prefix for unique values.
token = os.getenv("OPSRUN_TOKEN")
headers = { ["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json" }
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("thread_number", threads)
end
function init(args)
  math.randomseed(os.time() + (thread_number or 0) * 7919)
  prefix = tostring(os.time()) .. "-" .. tostring(thread_number or 0)
end
-- GET /v1/runs, first page of one type, with this Accept-Encoding (nil: none).
function first_page(accept_encoding)
  local page_headers = { ["Accept-Encoding"] = accept_encoding }
  for name, value in pairs(headers) do page_headers[name] = value end
  return function()
    return wrk.format("GET", "/v1/runs?type=inventory_sync&limit=50", page_headers)
  end
end
