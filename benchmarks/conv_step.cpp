// The convolution layers of the dcgan preset, and one whole DCGAN training
// step, timed; benchmarks/compare.sh runs the same in PyTorch and prints the
// ratios.
//
// Layers (batch 64, kernel 4, stride 2, padding 1, as in mnist_gan's dcgan
// preset): conv2d 1->64 28->14, conv2d 64->128 14->7, conv_transpose2d
// 128->64 7->14, conv_transpose2d 64->1 14->28; forward alone, and forward +
// backward with every gradient (input, weight, bias). The step: gan::Gan of
// the dcgan preset on synthetic 28 x 28 images, one D update on a real and a
// fake batch, one G update through D, Adam for both (the averaged generator's
// update included). Its GEMM floor is the step's own BLAS calls, recorded
// during one step and replayed on buffers of their sizes: the time the step
// would take if everything but BLAS were free. Its FLOP count, the step's
// GFLOP/s and a large square sgemm's on one thread show how far both are
// from the hardware.
//
// Second order: D's update of the same GAN alone, plain and with the R1
// penalty applied at every update (gamma 0.01, r1_every 1: each update
// differentiates ||d D(x) / d x||^2 by D's weights); compare.sh times the same
// in PyTorch (torch.autograd.grad with create_graph).
//
//   build/benchmarks/conv_step [--threads N] [--rounds R]
// The last line is machine-readable (RESULT ...).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <sys/resource.h>

#include <xgrad.hpp>

#include "gan.hpp"
#include "interpose.hpp"
#include "presets.hpp"
#include "synthetic_images.hpp"

namespace {

using xgrad::Shape;
using xgrad::Tensor;
using xgrad::Var;
using Clock = std::chrono::steady_clock;

// Milliseconds of one run of f.
template <class F>
double time_ms(F&& f) {
    const auto t0 = Clock::now();
    f();
    return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// Median ms of `rounds` runs of f (after two warm-ups), with the allocations made during them.
template <class F>
double median_ms(int rounds, long& allocs, F&& f) {
    f();
    f();
    std::vector<double> ms;
    allocs = 0;
    for (int r = 0; r < rounds; ++r) {
        const auto t0 = Clock::now();
        allocs += alloc_counter::during(f);
        ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    }
    return bench::percentile(ms, 0.5);
}

struct Layer {
    const char* name;
    bool transposed;
    std::size_t in_c, out_c, side;  // input side
};

const Layer kLayers[] = {
    {"conv2d 1->64 28->14", false, 1, 64, 28},
    {"conv2d 64->128 14->7", false, 64, 128, 14},
    {"conv_transpose2d 128->64 7->14", true, 128, 64, 7},
    {"conv_transpose2d 64->1 14->28", true, 64, 1, 14},
};

struct LayerTimes {
    double forward, forward_backward;
    long allocs;
};

LayerTimes time_layer(const Layer& l, int rounds) {
    xgrad::Rng rng(3);
    Tensor x = Tensor::from_shape({64, l.in_c, l.side, l.side});
    Tensor w = l.transposed ? Tensor::from_shape({l.in_c, l.out_c, 4, 4}) : Tensor::from_shape({l.out_c, l.in_c, 4, 4});
    rng.fill_uniform(x, -1.f, 1.f);
    rng.fill_normal(w, 0.f, 0.02f);
    const Var xv(x, true), wv(w, true), bv(Tensor({l.out_c}, 0.f), true);
    const auto run = [&] {
        return l.transposed ? xgrad::conv_transpose2d(xv, wv, bv, {2, 1}) : xgrad::conv2d(xv, wv, bv, {2, 1});
    };
    Tensor dy = Tensor::from_shape(run().shape());
    rng.fill_uniform(dy, -1.f, 1.f);
    LayerTimes t{};
    long ignored = 0;
    {
        xgrad::NoGrad no_grad;
        t.forward = median_ms(rounds, ignored, [&] { run(); });
    }
    t.forward_backward = median_ms(rounds, t.allocs, [&] { xgrad::backward(run(), dy); });
    return t;
}

// Replays recorded products on buffers as large as each call reads or writes.
class GemmReplay {
public:
    explicit GemmReplay(std::vector<bench::GemmCall> calls) : calls_(std::move(calls)) {
        std::size_t a = 0, b = 0, c = 0;
        for (const auto& g : calls_) {
            a = std::max<std::size_t>(a, std::size_t(g.ta == 112 ? g.k : g.m) * g.lda);
            b = std::max<std::size_t>(b, std::size_t(g.tb == 112 ? g.n : g.k) * g.ldb);
            c = std::max<std::size_t>(c, std::size_t(g.m) * g.ldc);
        }
        a_.assign(a, 0.01f);
        b_.assign(b, 0.01f);
        c_.assign(c, 0.f);
    }
    void run() {
        for (const auto& g : calls_) {
            cblas_sgemm(101, g.ta, g.tb, g.m, g.n, g.k, 1.f, a_.data(), g.lda, b_.data(), g.ldb, g.beta, c_.data(), g.ldc);
        }
    }
    std::size_t size() const { return calls_.size(); }
    double flops() const {
        double total = 0;
        for (const auto& g : calls_) total += 2.0 * g.m * g.n * g.k;
        return total;
    }

private:
    std::vector<bench::GemmCall> calls_;
    std::vector<float> a_, b_, c_;
};

// GFLOP/s of one large square sgemm on one thread: the practical peak of
// this core, next to which the step's own rate is read.
double sgemm_peak_gflops(int rounds) {
    constexpr int kSide = 1024;
    std::vector<float> a(std::size_t(kSide) * kSide, 0.01f), b(a), c(a.size(), 0.f);
    long ignored = 0;
    const double ms = median_ms(rounds, ignored, [&] {
        cblas_sgemm(101, 111, 111, kSide, kSide, kSide, 1.f, a.data(), kSide, b.data(), kSide, 0.f, c.data(), kSide);
    });
    return 2.0 * kSide * kSide * kSide / (ms * 1e6);
}

}  // namespace

int main(int argc, char** argv) {
    int threads = 1, rounds = 30;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        if (arg == "--threads" && i + 1 < argc) {
            threads = std::atoi(argv[++i]);
        } else if (arg == "--rounds" && i + 1 < argc) {
            rounds = std::atoi(argv[++i]);
        } else {
            std::fprintf(stderr, "usage: %s [--threads N] [--rounds R]\n", argv[0]);
            return arg == "--help" ? 0 : 2;
        }
    }
    if (threads < 1 || rounds < 3) {
        std::fprintf(stderr, "conv_step: --threads must be >= 1 and --rounds >= 3\n");
        return 2;
    }
    xgrad::set_num_threads(threads);
    const std::string load_before = bench::load_average();

    // OpenBLAS's kernels follow the CPU unless the environment pins them
    // (docs/performance.md: Haswell's ran at about half the AVX-512 ones'
    // rate on an AMD EPYC), so say which ran.
    const char* coretype = std::getenv("OPENBLAS_CORETYPE");
    std::printf(
        "conv_step: dcgan layers (batch 64, k4 s2 p1) and one DCGAN step, %d thread(s), median of %d runs, "
        "OPENBLAS_CORETYPE %s\n",
        threads, rounds, coretype ? coretype : "unset");
    std::printf("  %-32s %10s %12s %8s\n", "layer", "fwd ms", "fwd+bwd ms", "allocs");
    std::vector<LayerTimes> layers;
    for (const Layer& l : kLayers) {
        layers.push_back(time_layer(l, rounds));
        std::printf("  %-32s %10.3f %12.3f %8ld\n", l.name, layers.back().forward, layers.back().forward_backward,
                    layers.back().allocs);
    }

    gan::Gan model(gan::dcgan_preset(), 1);
    bench::SyntheticImages data(2048, 784, 2);
    for (int i = 0; i < 5; ++i) model.step(data);
    bench::recorded.reserve(4096);
    bench::recording = true;
    model.step(data);
    bench::recording = false;

    long step_allocs = 0;
    const double step_ms = median_ms(rounds, step_allocs, [&] { model.step(data); });
    // The peak RSS of the step (the preset's lazy R1 included), read before
    // the replay below makes its buffers, each as large as the largest
    // operand of its kind: they are the benchmark's, not the step's. The R1
    // runs further down add a second GAN and its graphs.
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    const double peak_rss_mib = double(usage.ru_maxrss) / 1024.0;

    GemmReplay floor(bench::recorded);
    const auto replay = [&] {
        xgrad::set_num_threads(1);  // the replay is serial: one BLAS call at a time
        floor.run();
        xgrad::set_num_threads(threads);
    };
    // The ratio from the step and the replay timed in turn, round by round:
    // a drift of the machine's speed then moves both. Timed one after the
    // other, the two medians' ratio moved by up to 7 % from run to run on a
    // shared 2-vCPU machine (docs/design.md, "How the ratio is measured").
    replay();  // warm-up: the replay's buffers are touched once before timing
    std::vector<double> ratios, replay_times;
    for (int r = 0; r < rounds; ++r) {
        const double step_round = time_ms([&] { model.step(data); }), replay_round = time_ms(replay);
        replay_times.push_back(replay_round);
        ratios.push_back(step_round / (replay_round / threads));
    }
    const double ratio = bench::percentile(ratios, 0.5), replay_ms = bench::percentile(replay_times, 0.5);
    // With several threads the step's products run as row blocks side by
    // side: the floor is the serial replay split evenly.
    const double floor_ms = replay_ms / threads;
    std::printf(
        "DCGAN step (dcgan preset, batch 64):  %.3f ms; GEMM floor %.3f ms (%zu sgemm calls%s); ratio %.3f "
        "(the median of %d rounds timing both in turn)\n",
        step_ms, floor_ms, floor.size(), threads > 1 ? ", serial replay / threads" : "", ratio, rounds);
    // After the RSS reading: its 12 MiB of buffers are not the step's.
    const double peak_gflops = sgemm_peak_gflops(std::min(rounds, 10));
    // Per thread, so that it compares with the one-thread peak.
    const double gflop = floor.flops() / 1e9;
    const double step_gflops = gflop / (step_ms * 1e-3) / threads, floor_gflops = gflop / (replay_ms * 1e-3);
    std::printf(
        "  %.2f GFLOP per step: %.1f GFLOP/s per thread in the step, %.1f in its products alone; "
        "a 1024^3 sgemm on one thread: %.1f GFLOP/s\n",
        gflop, step_gflops, floor_gflops, peak_gflops);

    // D updates alone, without and with R1 at every update.
    gan::StepStats stats;
    long d_allocs = 0, r1_allocs = 0;
    const double d_ms = median_ms(rounds, d_allocs, [&] { model.discriminator_step(data, stats); });
    gan::GanConfig with_r1 = gan::dcgan_preset();
    with_r1.r1_gamma = 0.01f;
    with_r1.r1_every = 1;
    gan::Gan penalised(with_r1, 1);
    for (int i = 0; i < 3; ++i) penalised.step(data);
    const double r1_ms = median_ms(rounds, r1_allocs, [&] { penalised.discriminator_step(data, stats); });
    std::printf("D update alone: %.3f ms; with R1 at every update: %.3f ms (%.2fx), %g allocations per R1 update\n", d_ms, r1_ms,
                r1_ms / d_ms, double(r1_allocs) / rounds);

    // The conditional preset's nets: the same plus the class inputs and D's
    // projection. At the dcgan step's batch and width (not the preset's), so
    // that the ratio is what the conditioning costs.
    gan::GanConfig conditional_config = gan::cdcgan_preset();
    conditional_config.batch = gan::dcgan_preset().batch;
    conditional_config.channels = gan::dcgan_preset().channels;
    gan::Gan conditional(conditional_config, 1);
    for (int i = 0; i < 5; ++i) conditional.step(data);
    long cdcgan_allocs = 0;
    const double cdcgan_ms = median_ms(rounds, cdcgan_allocs, [&] { conditional.step(data); });
    std::printf("cdcgan step: %.3f ms (%.3fx the dcgan step), %g allocations per step\n", cdcgan_ms, cdcgan_ms / step_ms,
                double(cdcgan_allocs) / rounds);

    // The dcgan step with every D input augmented (translation and cutout, always).
    gan::GanConfig with_augment = gan::dcgan_preset();
    with_augment.augment = xgrad::parse_augment_policy("translation,cutout");
    gan::Gan augmenting(with_augment, 1);
    for (int i = 0; i < 5; ++i) augmenting.step(data);
    long augment_allocs = 0;
    const double augment_ms = median_ms(rounds, augment_allocs, [&] { augmenting.step(data); });
    std::printf("dcgan step with --augment translation,cutout: %.3f ms (%.3fx), %g allocations per step\n", augment_ms,
                augment_ms / step_ms, double(augment_allocs) / rounds);

    std::printf("allocations per step %g; peak RSS %.1f MiB (before the R1 runs); load average %s before / %s after\n",
                double(step_allocs) / rounds, peak_rss_mib, load_before.c_str(), bench::load_average().c_str());
    std::printf(
        "RESULT dcgan_ms_per_step=%.3f gemm_floor_ms=%.3f ratio=%.3f allocs_per_step=%g threads=%d conv1_ms=%.3f conv2_ms=%.3f "
        "convt1_ms=%.3f convt2_ms=%.3f d_step_ms=%.3f r1_d_step_ms=%.3f r1_allocs=%g gflop_per_step=%.3f "
        "step_gflops_per_thread=%.1f floor_gflops=%.1f sgemm_peak_gflops=%.1f cdcgan_ms_per_step=%.3f "
        "cdcgan_allocs_per_step=%g augment_ms_per_step=%.3f augment_allocs_per_step=%g openblas_coretype=%s\n",
        step_ms, floor_ms, ratio, double(step_allocs) / rounds, threads, layers[0].forward_backward, layers[1].forward_backward,
        layers[2].forward_backward, layers[3].forward_backward, d_ms, r1_ms, double(r1_allocs) / rounds, gflop, step_gflops,
        floor_gflops, peak_gflops, cdcgan_ms, double(cdcgan_allocs) / rounds, augment_ms, double(augment_allocs) / rounds,
        coretype ? coretype : "unset");
    return 0;
}
