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
