#!/usr/bin/python3
"""Reference timing of one DCGAN-on-MNIST training step in PyTorch (CPU).

Models (batch 64, 28x28x1 images, latent 100):
  G: Linear(100 -> 128*7*7) -> BatchNorm2d(128) -> ReLU          [reshaped to 128x7x7 before the BN]
     -> ConvTranspose2d(128 -> 64, k4, s2, p1) -> BatchNorm2d(64) -> ReLU
     -> ConvTranspose2d(64 -> 1, k4, s2, p1) -> Sigmoid                      : 1x28x28 in [0, 1]
  D: Conv2d(1 -> 64, k4, s2, p1) -> LeakyReLU(0.2)
     -> Conv2d(64 -> 128, k4, s2, p1) -> BatchNorm2d(128) -> LeakyReLU(0.2)
     -> Flatten -> Linear(6272 -> 1)                                         : a logit
  Loss: BCE-with-logits; non-saturating G loss (G maximises log D(G(z))).
  Optimisers: Adam(lr 2e-4, betas (0.5, 0.999)) for each of G and D.

One step (the classic PyTorch DCGAN example order):
  1. z ~ N(0, 1); fake = G(z)                        (one G forward, graph kept)
  2. D update: loss_D = BCE(D(real), 1) + BCE(D(fake.detach()), 0); backward; optD.step()
  3. G update: loss_G = BCE(D(fake), 1) through the updated D; backward; optG.step()
  --fake-mode nograd instead generates the D-step fake under torch.no_grad() and
  runs G forward again for the G update (two G forwards, no detach).
  --freeze-d turns off D's parameter gradients during the G update (only the
  input gradient through D is needed there; PyTorch's example computes them anyway).
  --d-only plain times the D update alone (fakes under no_grad); --d-only r1
  adds the R1 penalty at every update, as conv_step's second-order row:
  gamma/2 mean ||d D(x)/dx||^2 (gamma 0.01) by torch.autograd.grad(create_graph=True).

The data are synthetic (uniform [0, 1) "images", a fixed pool of batches): this
script measures time, not learning; MNIST itself is not needed.

  /usr/bin/python3 torch_dcgan_step.py --threads 1 [--steps 60] [--warmup 10]

Last line (machine-readable):
  RESULT torch_ms_per_step=<median> threads=<N> p10=<..> p90=<..> steps=<..> ...
"""
import argparse
import os
import statistics
import time

import torch
import torch.nn as nn

LATENT = 100
BATCH = 64


class Generator(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(LATENT, 128 * 7 * 7)
        self.net = nn.Sequential(
            nn.BatchNorm2d(128), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(128, 64, 4, 2, 1), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(64, 1, 4, 2, 1), nn.Sigmoid(),
        )

    def forward(self, z):
        return self.net(self.fc(z).view(-1, 128, 7, 7))


class Discriminator(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 64, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(64, 128, 4, 2, 1), nn.BatchNorm2d(128), nn.LeakyReLU(0.2, inplace=True),
            nn.Flatten(), nn.Linear(128 * 7 * 7, 1),
        )

    def forward(self, x):
        return self.net(x)


def other_cpu_fraction(b0, o0, t0):
    """CPU used by other processes since (b0, o0, t0), as a fraction of the machine."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    busy = (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / 100.0
    t = os.times()
    own = t.user + t.system
    el = time.perf_counter() - t0
    return max(0.0, ((busy - b0) - (own - o0)) / (el * os.cpu_count())) if el > 0 else 0.0


def snapshot():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    t = os.times()
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / 100.0, t.user + t.system, time.perf_counter()


def wait_quiet(thresh=0.03, max_wait=10):
    """Block until other processes use < thresh of the machine for two 0.3 s windows."""
    t_start, quiet = time.perf_counter(), 0
    while quiet < 2 and time.perf_counter() - t_start < max_wait:
        s = snapshot()
        time.sleep(0.3)
        quiet = quiet + 1 if other_cpu_fraction(*s) < thresh else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=40, help="timed steps")
    ap.add_argument("--warmup", type=int, default=8)
    ap.add_argument("--fake-mode", choices=["detach", "nograd"], default="detach")
    ap.add_argument("--freeze-d", action="store_true")
    ap.add_argument("--d-only", choices=["plain", "r1"], help="time D's update alone, without or with R1")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--attempts", type=int, default=2, help="redo the timing if other processes disturbed it")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    G, D = Generator(), Discriminator()
    G.train()
    D.train()
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    bce = nn.BCEWithLogitsLoss()
    ones = torch.ones(BATCH, 1)
    zeros = torch.zeros(BATCH, 1)
    real_pool = [torch.rand(BATCH, 1, 28, 28) for _ in range(8)]  # synthetic "MNIST" batches

    def d_step(i):
        real = real_pool[i % len(real_pool)]
        with torch.no_grad():
            fake = G(torch.rand(BATCH, LATENT) * 2 - 1)
        opt_d.zero_grad(set_to_none=True)
        if args.d_only == "r1":
            real = real.detach().requires_grad_(True)
        real_logits = D(real)
        loss_d = bce(real_logits, ones) + bce(D(fake), zeros)
        if args.d_only == "r1":
            g, = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
            loss_d = loss_d + g.square().sum([1, 2, 3]).mean() * (0.01 / 2)
        loss_d.backward()
        opt_d.step()
        return loss_d.item(), 0.0

    def step(i):
        if args.d_only:
            return d_step(i)
        real = real_pool[i % len(real_pool)]
        z = torch.randn(BATCH, LATENT)
        # ---- D update: real batch + fake batch (no gradient into G)
        if args.fake_mode == "detach":
            fake = G(z)
            fake_for_d = fake.detach()
        else:
            with torch.no_grad():
                fake_for_d = G(z)
        opt_d.zero_grad(set_to_none=True)
        loss_d = bce(D(real), ones) + bce(D(fake_for_d), zeros)
        loss_d.backward()
        opt_d.step()
        # ---- G update through the (updated) D, non-saturating loss
        if args.fake_mode == "nograd":
            fake = G(z)
        if args.freeze_d:
            D.requires_grad_(False)
        opt_g.zero_grad(set_to_none=True)
        loss_g = bce(D(fake), ones)
        loss_g.backward()
        opt_g.step()
        if args.freeze_d:
            D.requires_grad_(True)
        return loss_d.item(), loss_g.item()

    for i in range(args.warmup):
        step(i)
    # The machine may be shared: wait until other processes are quiet, time the
    # steps, and redo (at most --attempts times) if others used > 6% meanwhile.
    for attempt in range(1, args.attempts + 1):
        wait_quiet()
        times = []
        b0, o0, t0 = snapshot()
        for i in range(args.steps):
            a = time.perf_counter()
            ld, lg = step(i)
            times.append((time.perf_counter() - a) * 1e3)
        other = other_cpu_fraction(b0, o0, t0)
        if other <= 0.06:
            break
    s = sorted(times)
    q = lambda f: s[min(len(s) - 1, int(round(f * (len(s) - 1))))]
    load1 = open("/proc/loadavg").read().split()[0]
    print(f"# torch {torch.__version__} threads={torch.get_num_threads()} mkldnn={torch.backends.mkldnn.enabled} "
          f"fake_mode={args.fake_mode} freeze_d={args.freeze_d} d_only={args.d_only} last losses D={ld:.4f} G={lg:.4f}")
    print(f"RESULT torch_ms_per_step={statistics.median(s):.3f} threads={args.threads} p10={q(0.1):.3f} "
          f"p90={q(0.9):.3f} steps={len(s)} fake_mode={args.fake_mode} freeze_d={int(args.freeze_d)} d_only={args.d_only} "
          f"other_cpu={other:.2f} attempts={attempt} load1={load1}")


if __name__ == "__main__":
    main()
