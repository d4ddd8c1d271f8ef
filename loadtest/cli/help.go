package cli

// longHelp reads like k6's: examples first, then what is measured and how.
const longHelp = `Load-test any OpenAI-compatible endpoint and measure time-to-first-token honestly.

Examples:
  # 10 virtual users (closed loop) for 30 s against a local server
  infergw loadtest --url http://127.0.0.1:8080 --model llama-3-8b --vus 10 --duration 30s

  # open loop: 50 requests/s on an absolute Poisson schedule, 10 s warm-up excluded
  infergw loadtest --url http://127.0.0.1:8080 --model llama-3-8b --rate 50 --arrival poisson \
      --warmup 10s --duration 1m

  # ramp the rate like k6 stages, gate CI on thresholds (exit code 99 when one fails)
  infergw loadtest --url http://gw:8080 --model base=3 --model lora-a=1 \
      --stage 30s:10 --stage 1m:50 --stage 30s:0 \
      --threshold 'ttft_p95<500ms' --threshold 'error_rate<0.01'

  # prefix-heavy workload (8 groups x 1000-token prefix + 50-token suffix), with reports
  infergw loadtest --url http://gw:8080 --model m --rate 20 --workload shared-prefix \
      --groups 8 --prefix-tokens 1000 --suffix-tokens 50 --output-tokens 64 \
      --out json=/tmp/requests.ndjson --summary-export /tmp/summary.json --report /tmp/report.html

  # find the saturation point: 20 s per rate, stop at the first rate not sustained
  infergw loadtest --url http://gw:8080 --model m --sweep 10:100:10 --duration 20s \
      --slo ttft=500ms,tpot=50ms

Load shapes:
  --vus N              closed loop: N users, each sends when its previous response ended.
  --rate R             open loop: R requests/s on an absolute schedule (--arrival constant,
                       poisson or gamma with --gamma-shape k; CV = 1/sqrt(k)). A start that
                       finds --max-inflight requests running is dropped and counted; a start
                       later than --late-after is counted late (coordinated omission is
                       reported, not hidden).
  --stage D:T          ramp linearly to T over D (VUs with --vus, else requests/s).
  --sweep R1,R2|A:B:S  one open-loop run of --duration per rate until one saturates.

Measures (all per request, aggregated in HDR histograms, p50/p90/p95/p99/p99.9):
  TTFB          send -> response headers received.
  TTFT          send -> first SSE chunk carrying non-empty generated text. Role-only,
                empty, usage-only chunks and keep-alive comments do not count.
  inter_chunk   gap between consecutive content chunks.
  ITL           per token: each inter-chunk gap divided by the tokens that chunk carried
                (from per-chunk usage when the server reports it, else the final usage's
                extra tokens spread evenly), recorded once per token. Chunks that arrive
                together (in one read: sent back to back) give gaps of about 1µs.
  E2E           send -> [DONE] (or end of stream).
  TPOT          (E2E - TTFT) / (output tokens - 1), requests with >= 2 output tokens.
  output tokens usage.completion_tokens when reported, else the number of content chunks.
  throughput    requests and output tokens / measured period (end of warm-up to last
                completion).
  cached ratio  sum usage.prompt_tokens_details.cached_tokens / sum usage.prompt_tokens.
  goodput       successful requests meeting every --slo bound, per second and as a ratio.
  schedule lag  actual send - scheduled send (open loop).

Threshold metrics: {ttft,ttfb,itl,inter_chunk,tpot,e2e,lag}_{avg,min,med,max,p50,p90,p95,
p99,p99.9} (ms unless a unit is given), error_rate, request_rate (starts per second of the
schedule), completion_rate (completions per second to the last one), output_tokens_per_s,
goodput_rate, goodput_ratio, cached_token_ratio, requests, failed, dropped, late.
Operators: < <= > >= == !=.`
