#!/usr/bin/python3
"""Per-layer PyTorch timings of the four DCGAN conv shapes (N=64, k4 s2 p1).

For each shape: forward, backward-data (dx), backward-weight (dW, db) and
forward+backward, median / p10 / p90 ms over repeated calls. torch.backends.mkldnn
is left as it is by default (enabled): Debian's PyTorch 1.13 links the system
oneDNN 2.6.3 (libdnnl).

  /usr/bin/python3 torch_conv_bench.py --threads 1

Forward is timed as a training-mode forward (autograd records the graph).
Backward passes are timed with aten::convolution_backward and an output mask,
the op autograd itself calls, so dx and (dW, db) can be timed separately;
"fwd_bwd" is module forward + torch.autograd.grad of (x, W, b).
Output: RESULT lines in the same format as the C++ benchmarks.
"""
import argparse
import os
import statistics
import time

import torch
import torch.nn as nn

SHAPES = [
    # name, transposed, C_in, H_in, C_out
    ("A", False, 1, 28, 64),
    ("B", False, 64, 14, 128),
    ("C", True, 128, 7, 64),
    ("D", True, 64, 14, 1),
]
N = 64


# ---------------------------------------------------------------- quiet machine
def _busy_s():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = v
    return (user + nice + system + irq + softirq + steal) / 100.0


def _own_s():
    t = os.times()
    return t.user + t.system


class OtherLoad:
    """CPU used by other processes during a window, as a fraction of the machine."""

    def __init__(self):
        self.b0, self.o0, self.t0 = _busy_s(), _own_s(), time.perf_counter()

    def fraction(self):
        el = time.perf_counter() - self.t0
        if el < 0.05:
            return 0.0
        other = (_busy_s() - self.b0) - (_own_s() - self.o0)
        return max(0.0, other / (el * os.cpu_count()))


def wait_quiet(thresh=0.03, max_wait=4):
    t0, quiet = time.perf_counter(), 0
    while quiet < 2 and time.perf_counter() - t0 < max_wait:
        ol = OtherLoad()
        time.sleep(0.3)
        quiet = quiet + 1 if ol.fraction() < thresh else 0


def time_it(f, min_reps=11, min_s=0.3, max_reps=300, warm=3):
    for _ in range(warm):
        f()
    ts = []
    t_start = time.perf_counter()
    while len(ts) < max_reps and (len(ts) < min_reps or time.perf_counter() - t_start < min_s):
        a = time.perf_counter()
        f()
        ts.append((time.perf_counter() - a) * 1e3)
    return ts


def quantile(sorted_ts, q):
    pos = q * (len(sorted_ts) - 1)
    i = int(pos)
    fr = pos - i
    return sorted_ts[i] * (1 - fr) + sorted_ts[i + 1] * fr if i + 1 < len(sorted_ts) else sorted_ts[i]


def time_quiet(f, attempts=2, redo=0.06):
    if os.environ.get("BENCH_QUICK"):
        return time_it(f, 3, 0, 3, 1), -1.0, 1
    for a in range(1, attempts + 1):
        wait_quiet()
        ol = OtherLoad()
        ts = time_it(f)
        other = ol.fraction()
        if other <= redo:
            break
    return ts, other, a


def report(threads, shape, pas, ts, other, attempts, gflop):
    s = sorted(ts)
    med = statistics.median(s)
    load1 = open("/proc/loadavg").read().split()[0]
    print(f"RESULT engine=torch config=torch{threads} shape={shape} pass={pas} B=0 median_ms={med:.4f} "
          f"p10_ms={quantile(s, 0.1):.4f} p90_ms={quantile(s, 0.9):.4f} min_ms={s[0]:.4f} reps={len(s)} "
          f"allocs_per_call=-1 gflops={gflop / (med * 1e-3):.1f} other_cpu={other:.2f} attempts={attempts} "
          f"load1={load1}", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"# torch {torch.__version__} threads={torch.get_num_threads()} "
          f"mkldnn_enabled={torch.backends.mkldnn.enabled} mkldnn_available={torch.backends.mkldnn.is_available()} "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}", flush=True)
    for name, transposed, cin, h, cout in SHAPES:
        if transposed:
            m = nn.ConvTranspose2d(cin, cout, 4, 2, 1)
        else:
            m = nn.Conv2d(cin, cout, 4, 2, 1)
        x = torch.rand(N, cin, h, h, requires_grad=True)
        with torch.no_grad():
            y0 = m(x)
        dy = torch.rand_like(y0)
        gflop = 2.0 * N * cin * cout * 16 * (h * h if transposed else y0.shape[2] * y0.shape[3]) * 1e-9
        w, b = m.weight, m.bias
        conv_args = dict(bias_sizes=[cout], stride=[2, 2], padding=[1, 1], dilation=[1, 1],
                         transposed=transposed, output_padding=[0, 0], groups=1)

        def fwd():
            return m(x)

        def bwd_data():
            return torch.ops.aten.convolution_backward(dy, x, w, output_mask=[True, False, False], **conv_args)

        def bwd_weight():
            return torch.ops.aten.convolution_backward(dy, x, w, output_mask=[False, True, True], **conv_args)

        def fwd_bwd():
            y = m(x)
            return torch.autograd.grad(y, (x, w, b), dy)

        # which ATen kernels run (once, outside timing)
        with torch.autograd.profiler.profile() as prof:
            fwd_bwd()
        ops = sorted({e.name for e in prof.function_events
                      if "conv" in e.name or "mkldnn" in e.name or "slow" in e.name})
        print(f"# {name}: ops {', '.join(ops)}", flush=True)

        # check the aten backward matches autograd (so we time the right thing)
        gx, gw, gb = fwd_bwd()
        dx_ = bwd_data()[0]
        _, dw_, db_ = bwd_weight()
        assert torch.allclose(gx, dx_, rtol=1e-4, atol=1e-4)
        assert torch.allclose(gw, dw_, rtol=1e-4, atol=1e-3)
        assert torch.allclose(gb, db_, rtol=1e-4, atol=1e-3)

        for pas, f, gf in (("fwd", fwd, gflop), ("bwd_data", bwd_data, gflop),
                           ("bwd_weight", bwd_weight, gflop), ("fwd_bwd", fwd_bwd, 3 * gflop)):
            ts, other, att = time_quiet(f)
            report(args.threads, name, pas, ts, other, att, gf)
    print("# done", flush=True)


if __name__ == "__main__":
    main()
