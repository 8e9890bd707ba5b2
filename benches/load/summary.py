"""Prints one line from oha's JSON output (standard input): rate, statuses, latency."""
import json
import sys

r = json.load(sys.stdin)
s = r["summary"]
p = r["latencyPercentiles"]
codes = r.get("statusCodeDistribution", {})
ok = codes.get("200", 0)
others = {k: v for k, v in codes.items() if k != "200"}
ms = lambda x: (x or 0) * 1000
print(
    f"{sys.argv[1]}: {s['requestsPerSec']:.0f} requests/s, {ok} answered 200, "
    f"other statuses {others}, errors {r.get('errorDistribution', {})}, "
    f"latency p50 {ms(p['p50']):.2f} ms, p99 {ms(p['p99']):.2f} ms, "
    f"p99.9 {ms(p['p99.9']):.2f} ms, max {ms(s['slowest']):.2f} ms"
)
