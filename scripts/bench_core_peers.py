"""Peers for scripts/bench-core: numpy/torch histograms and the reference entropy search, timed on
the data the Swift side wrote, then one table with both sides."""
import json
import os
import sys
import time
from collections import Counter

import numpy as np
import torch
from scipy.stats import entropy

values_path, hist_path, swift_path = sys.argv[1:4]
x = np.load(values_path)
swift = json.load(open(swift_path))
hist = json.load(open(hist_path))
torch.set_num_threads(1)


def best_of(f, repeats=5):
    """Best wall-clock seconds and best thread CPU seconds (less disturbed by other processes)."""
    best, best_cpu = float("inf"), float("inf")
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.thread_time()
        f()
        best = min(best, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.thread_time() - c0)
    return best, best_cpu


top = float(np.abs(x).max())
bins = 4096
t_numpy, c_numpy = best_of(lambda: np.histogram(np.abs(x), bins=bins, range=(0.0, top)))
tx = torch.from_numpy(x)
t_torch, c_torch = best_of(lambda: torch.histc(torch.abs(tx), bins=bins, min=0.0, max=top))


def reference_entropy(counts):
    """The reference's entropy search as published (ModelOpt/pytorch-quantization conventions)."""
    c = np.array(counts, dtype=np.float64)
    c[0] = c[1]
    divergences, candidates = [], []
    for i in range(128, len(c) + 1):
        space = np.linspace(0, i, num=129)
        level = np.digitize(range(i), space) - 1
        level[c[:i] == 0] = -1
        totals = np.zeros(128)
        for j, l in enumerate(level):
            if l != -1:
                totals[l] += c[j]
        for l, k in Counter(level).items():
            if l != -1:
                totals[l] /= k
        q = np.array([totals[l] if l != -1 else 0.0 for l in level])
        p = c[:i].copy()
        p[-1] += c[i:].sum()
        divergences.append(entropy(p, q))
        candidates.append(i)
    d = np.array(divergences)
    return candidates[len(d) - 1 - int(np.argmin(d[::-1]))]


t0, c0 = time.perf_counter(), time.thread_time()
ref_bin = reference_entropy(hist["counts"])
t_ref, c_ref = time.perf_counter() - t0, time.thread_time() - c0

n = swift["values"]
rows = [
    ("histogram, 16M float32 values", "shardcal Histogram.accumulate", n / swift["accumulate_seconds"] / 1e9,
     n / swift["accumulate_cpu_seconds"] / 1e9, "G values/s"),
    ("", "numpy np.histogram (4096 bins)", n / t_numpy / 1e9, n / c_numpy / 1e9, "G values/s"),
    ("", "torch.histc (4096 bins)", n / t_torch / 1e9, n / c_torch / 1e9, "G values/s"),
    (f"entropy search, {swift['bins']} bins", "shardcal ThresholdSearch.entropy", swift["entropy_search_seconds"] * 1e3,
     swift["entropy_search_cpu_seconds"] * 1e3, "ms"),
    ("", "reference algorithm (numpy/scipy)", t_ref * 1e3, c_ref * 1e3, "ms"),
]
print(f"{'benchmark':34} {'implementation':36} {'result':>12} {'(CPU time)':>12}")
for a, b, v, cpu, unit in rows:
    print(f"{a:34} {b:36} {v:12.3f} {cpu:12.3f} {unit}")
print()
print(f"accumulation: {swift['values'] / swift['accumulate_seconds'] / (n / t_numpy):.1f}x numpy, "
      f"{swift['values'] / swift['accumulate_seconds'] / (n / t_torch):.1f}x torch")
print(f"entropy search: {t_ref / swift['entropy_search_seconds']:.0f}x faster than the reference; "
      f"same bin: {ref_bin == swift['entropy_bin']} (shardcal {swift['entropy_bin']}, reference {ref_bin})")
print(f"load average (1, 5, 15 min): {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
