#!/usr/bin/env python3
"""Plots how the scale bench grows with N from its JSON files (target/bench/bench-<N>-*.json):
convergence and floor (s) and peak RSS (MiB) against namespaces, the newest file per N.

    python3 e2e/tools/bench-plot.py [OUT.png] [JSON...]

Default output docs/bench-scaling.png; default inputs every target/bench/bench-*.json.
Needs matplotlib; prints a note and exits 0 without it (the plot is optional)."""
import glob
import json
import os
import sys

root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "docs", "bench-scaling.png")
files = sys.argv[2:] or sorted(glob.glob(os.path.join(root, "target", "bench", "bench-*.json")))

newest = {}
for f in files:
    with open(f) as fh:
        r = json.load(fh)
    if "convergence_seconds" not in r:
        continue
    n = r["n"]
    if n not in newest or os.path.getmtime(f) > os.path.getmtime(newest[n][0]):
        newest[n] = (f, r)
if len(newest) < 2:
    print(f"bench-plot: results for {len(newest)} N only; nothing to plot")
    sys.exit(0)
try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    print("bench-plot: matplotlib is not installed (pip install matplotlib); no plot")
    sys.exit(0)

ns = sorted(newest)
med = lambda key: [newest[n][1][key]["median"] for n in ns]
fig, (t, m) = plt.subplots(1, 2, figsize=(9, 3.6))
t.plot(ns, med("convergence_seconds"), "o-", label="convergence")
t.plot(ns, med("floor_seconds"), "s--", label="floor (fastest plain client)")
t.plot(ns, med("drift_repair_p99_seconds"), "^-", label="drift repair p99")
t.set_xlabel("namespaces")
t.set_ylabel("seconds")
t.set_xscale("log")
t.set_yscale("log")
t.legend(fontsize=8)
t.grid(True, which="both", alpha=0.3)
m.plot(ns, med("peak_rss_mib"), "o-", label="peak RSS to convergence")
m.plot(ns, med("idle_rss_mib"), "s--", label="RSS after idle")
m.set_xlabel("namespaces")
m.set_ylabel("MiB")
m.set_xscale("log")
m.legend(fontsize=8)
m.grid(True, which="both", alpha=0.3)
fig.suptitle("Rampart scale bench: " + ", ".join(f"N={n}" for n in ns), fontsize=10)
fig.tight_layout()
os.makedirs(os.path.dirname(out), exist_ok=True)
fig.savefig(out, dpi=110)
print(f"bench-plot: {out} from {', '.join(os.path.relpath(newest[n][0], root) for n in ns)}")
