-- Baseline: the cheapest request the same server answers (no JSON, no tokenizer, no limiter).
wrk.method = "GET"
