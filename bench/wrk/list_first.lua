-- GET /v1/runs, first page of one type.
dofile(os.getenv("BENCH_DIR") .. "/wrk/common.lua")
request = first_page(nil)
