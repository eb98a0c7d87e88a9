#!/usr/bin/env python3
"""The reference GAN training step of benchmarks/gan_step.cpp in PyTorch, for comparison.

D 784-128 ReLU-1, G 100-128 ReLU-784 sigmoid, batch 128, k = 1, Adam(1e-3, 0.9, 0.999)
for both nets, BCE with logits, non-saturating G loss; the D step generates the fake batch
under no_grad, the G step freezes D. Real batches are drawn from a fixed in-memory set of
random images, like gan_step's. Prints the median ms per step and a RESULT line.

    /usr/bin/python3 benchmarks/torch_gan_step.py [--threads N] [--steps S]
"""
import argparse
import resource
import statistics
import sys
import time

try:
    import torch
    from torch import nn
except ImportError:
    sys.exit("torch_gan_step: PyTorch is not importable here (Debian: apt-get install python3-torch)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (torch.set_num_threads)")
    parser.add_argument("--steps", type=int, default=1200, help="timed steps after 50 warm-up steps")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    # xgrad's optimizers flush subnormals to zero; give PyTorch the same advantage.
    torch.set_flush_denormal(True)
    torch.manual_seed(args.seed)
    batch, data_dim, z_dim, hidden = 128, 784, 100, 128

    discriminator = nn.Sequential(nn.Linear(data_dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))
    generator = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(), nn.Linear(hidden, data_dim), nn.Sigmoid())
    d_optimizer = torch.optim.Adam(discriminator.parameters(), lr=1e-3, betas=(0.9, 0.999))
    g_optimizer = torch.optim.Adam(generator.parameters(), lr=1e-3, betas=(0.9, 0.999))
    bce = nn.BCEWithLogitsLoss()
    images = torch.rand(2048, data_dim)
    ones, zeros = torch.ones(batch, 1), torch.zeros(batch, 1)

    def noise():
        return torch.rand(batch, z_dim) * 2 - 1

    def step():
        real = images[torch.randint(0, images.shape[0], (batch,))]
        with torch.no_grad():
            fake = generator(noise())
        d_loss = bce(discriminator(real), ones) + bce(discriminator(fake), zeros)
        d_optimizer.zero_grad()
        d_loss.backward()
        d_optimizer.step()

        for p in discriminator.parameters():
            p.requires_grad_(False)
        g_loss = bce(discriminator(generator(noise())), ones)
        g_optimizer.zero_grad()
        g_loss.backward()
        g_optimizer.step()
        for p in discriminator.parameters():
            p.requires_grad_(True)
        return d_loss.item(), g_loss.item()

    for _ in range(50):
        step()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    median = statistics.median(times)
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"torch_gan_step: PyTorch {torch.__version__}, threads {torch.get_num_threads()}, {args.steps} steps")
    print(f"  PyTorch step {median:7.3f} ms (p10 {times[len(times) // 10]:.3f} .. p90 {times[9 * len(times) // 10]:.3f})")
    print(f"  peak RSS     {peak_rss_mib:.1f} MiB")
    print(f"RESULT torch_ms_per_step={median:.3f} peak_rss_mib={peak_rss_mib:.1f} threads={torch.get_num_threads()}")


if __name__ == "__main__":
    main()
