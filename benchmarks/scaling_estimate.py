#!/usr/bin/env python3
"""Scaling estimate for data-parallel GAN training on 2-64 nodes (docs/distributed.md).

Reads the RESULT line of distributed_bench (stdin or the first argument) and
combines its measured compute times with the standard ring-allreduce cost model

    T_allreduce(S, N) = 2 (N - 1) / N * S / B  +  2 (N - 1) * alpha

(S bytes, N ranks, bandwidth B, latency alpha), for one rank per node:

    T_step(N) = c * m_rank  +  f  +  T_allreduce(4 * P_D, N)  +  T_allreduce(4 * P_G, N)

c: forward + backward time per sample (1 thread), f: the per-step work every
rank repeats whatever N is (drawing the global batch, Adam over all
parameters), both fitted by distributed_bench to its 1-process and 2-rank
steps; P_D, P_G: the two nets' parameter counts (each
optimizer step reduces its own net). No overlap of communication with
computation is assumed (xgrad does none).

  python3 benchmarks/scaling_estimate.py "RESULT ..."   or   ... | python3 benchmarks/scaling_estimate.py
"""
import re
import sys

NETWORKS = [  # name, bandwidth in bytes/s, latency in s
    ("10 GbE (TCP)", 1.25e9, 30e-6),
    ("100 Gb/s InfiniBand EDR", 12.5e9, 1.5e-6),
]
NODES = [1, 2, 4, 8, 16, 32, 64]
GLOBAL_BATCH = 128


def allreduce(size_bytes, n, bandwidth, latency):
    if n == 1:
        return 0.0
    return 2 * (n - 1) / n * size_bytes / bandwidth + 2 * (n - 1) * latency


def main():
    text = sys.argv[1] if len(sys.argv) > 1 else sys.stdin.read()
    line = next((l for l in text.splitlines() if l.startswith("RESULT")), None)
    if line is None:
        sys.exit("scaling_estimate: no RESULT line (expected distributed_bench's output)")
    r = dict(kv.split("=", 1) for kv in line.split()[1:])
    c = float(r["c_compute_ms"]) * 1e-3 / GLOBAL_BATCH  # s per sample
    f = float(r["c_fixed_ms"]) * 1e-3
    nets = {"reference": (int(r["ref_d_params"]), int(r["ref_g_params"])),
            "dcgan": (int(r["dcgan_d_params"]), int(r["dcgan_g_params"]))}
    print(f"measured: {c * 1e6:.1f} us per sample (forward + backward), {f * 1e3:.3f} ms per step repeated on every rank")
    for name, bandwidth, latency in NETWORKS:
        print(f"\n{name}: B = {bandwidth / 1e9:g} GB/s, alpha = {latency * 1e6:g} us")
        d, g = nets["reference"]
        print("| nodes | allreduce/step, reference | allreduce/step, dcgan | reference step, m = 128 (strong) | speedup"
              " | reference step, 128 per node (weak) | efficiency |")
        print("|---|---|---|---|---|---|---|")
        t1 = c * GLOBAL_BATCH + f
        for n in NODES:
            ar_ref = allreduce(4 * d, n, bandwidth, latency) + allreduce(4 * g, n, bandwidth, latency)
            ar_dc = sum(allreduce(4 * p, n, bandwidth, latency) for p in nets["dcgan"])
            strong = c * GLOBAL_BATCH / n + f + ar_ref
            weak = c * GLOBAL_BATCH + f + ar_ref
            print(f"| {n} | {ar_ref * 1e3:.3f} ms | {ar_dc * 1e3:.2f} ms | {strong * 1e3:.2f} ms | {t1 / strong:.2f}x"
                  f" | {weak * 1e3:.2f} ms | {t1 / weak * 100:.0f}% |")


if __name__ == "__main__":
    main()
