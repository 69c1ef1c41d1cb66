"""Draws latency by path against the floors from the benchmark's JSON.

Usage: python3 benches/plot.py target/bench/results.json target/bench/latency.png
(`cargo bench --bench lambda` runs it for you when matplotlib is installed).
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

results = json.load(open(sys.argv[1]))
paths = results["paths"]
names = [p["path"] for p in paths]
medians = [p["median_us"] for p in paths]
p99s = [p["p99_us"] for p in paths]
colors = ["#999999" if n.startswith("floor") else "#1f77b4" for n in names]

fig, ax = plt.subplots(figsize=(10, 5))
y = range(len(names))
ax.barh(y, p99s, color="#dddddd", label="p99")
ax.barh(y, medians, color=colors, label="median")
ax.axvline(paths[0]["median_us"], color="#555555", linestyle="--", linewidth=1, label="floor-echo median")
ax.axvline(paths[1]["median_us"], color="#d62728", linestyle=":", linewidth=1, label="floor-one-rtt median")
ax.set_yticks(list(y), names)
ax.invert_yaxis()
ax.set_xlabel("µs per invocation (Runtime API side)")
ax.set_title("idempotent-orders: latency by path against the floors")
ax.legend(loc="lower right")
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=110)
