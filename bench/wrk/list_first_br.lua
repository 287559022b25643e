-- The first list page, brotli-compressed (Accept-Encoding: br).
dofile(os.getenv("BENCH_DIR") .. "/wrk/common.lua")
request = first_page("br")
