-- The first list page with Chromium's Accept-Encoding: opsrun answers it with gzip.
dofile(os.getenv("BENCH_DIR") .. "/wrk/common.lua")
request = first_page("gzip, deflate, br, zstd")
