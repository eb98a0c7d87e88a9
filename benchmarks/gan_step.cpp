// One GAN training step of the reference preset, timed against its floor.
//
// The floor is the same step written by hand for this one network: its 21
// products at the exact shapes into preallocated buffers, plus one
// vectorised pass for each piece of elementwise work (bias + activation, BCE
// loss and gradient, ReLU masks, column sums, Adam; the sigmoid and Adam
// through xgrad::simd at xgrad's level), with hand-derived
// gradients and no allocation. The products go through xgrad::gemm, the
// shape-checked BLAS call xgrad's ops make (sgemv for the 5 single-column
// results, a loop for the 3 outer products, row blocks over the threads), so
// the ratio measures everything but the products themselves. It computes only what the algorithm needs (no G backward in the D
// step, no D weight gradients in the G step) and draws its batches and noise through the same DataSource and Rng calls. A check
// before timing runs both from the same state and compares losses and parameters after one step, so the floor provably computes
// the same update.
//
// Both are measured in the same process, interleaved round by round, so that
// load from elsewhere affects both alike; the ratio is what to read.
// Heap allocations (counted only while a step runs) and BLAS calls are
// observed through benchmarks/interpose.hpp.
//
//   build-perf/benchmarks/gan_step [--threads N [--openblas-threads]] [--rounds R] [--steps S] [--seed N]
// --threads N uses xgrad's threads (xgrad::set_num_threads); with
// --openblas-threads, OpenBLAS's own threads instead, for comparison.
// XGRAD_SIMD=sse2|avx2|avx512 runs both at a lower SIMD level than the CPU's
// best (xgrad/core/simd.hpp); the level is printed, and on the RESULT line.
#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <string>
#include <vector>

#include <sys/resource.h>
#include <xmmintrin.h>

#include <xtensor/xmath.hpp>
#include <xtensor/xnoalias.hpp>
#include <xtensor/xoperation.hpp>

#include <xgrad.hpp>
#include <xgrad/core/simd.hpp>

#include "gan.hpp"
#include "interpose.hpp"
#include "presets.hpp"
#include "synthetic_images.hpp"

extern "C" void openblas_set_num_threads(int);
extern "C" int openblas_get_num_threads();

namespace {

using xgrad::Tensor;
using xgrad::Var;
using Clock = std::chrono::steady_clock;

// ---- the floor: the reference step written by hand -------------------------

struct Product {
    const Tensor* a;
    bool transpose_a;
    const Tensor* b;
    bool transpose_b;
    Tensor* c;
    float beta;
};

// Weights (out, in), as xgrad::Linear keeps them, bias, their gradients and
// Adam moments of one dense layer. The products read w transposed in place.
struct Layer {
    Tensor w, b, dw, db, mw, vw, mb, vb;
    explicit Layer(const xgrad::Linear& l)
        : w(l.weight.value()),
          b(l.bias.value()),
          dw(w.shape()),
          db(b.shape()),
          mw(w.shape(), 0.f),
          vw(w.shape(), 0.f),
          mb(b.shape(), 0.f),
          vb(b.shape(), 0.f) {}
};

float total(const Tensor& t) {
    float s = 0.f;
    for (float x : t) s += x;
    return s;
}

// The elementwise passes below are plain loops the compiler vectorises, or,
// for a transcendental (exp) and Adam, xgrad::simd's kernels: the SIMD
// level xgrad's own ops run at (the CPU's best, or XGRAD_SIMD), so that the
// floor is one at every level. Each pass touches its data once.

// y = max(y + b, 0), b broadcast over the rows.
void add_bias_relu(Tensor& y, const Tensor& b) {
    const std::size_t rows = y.shape()[0], cols = y.shape()[1];
    for (std::size_t r = 0; r < rows; ++r) {
        float* row = y.data() + r * cols;
        for (std::size_t c = 0; c < cols; ++c) row[c] = std::max(row[c] + b.data()[c], 0.f);
    }
}

// y = sigmoid(y + b), b broadcast over the rows; rows split over the threads.
// A row (784 floats) stays in L1 between the add and the sigmoid.
void add_bias_sigmoid(Tensor& y, const Tensor& b) {
    const std::size_t cols = y.shape()[1];
    xgrad::parallel_for(y.shape()[0], 16384 / cols + 1, [&](std::size_t begin, std::size_t end) {
        for (std::size_t r = begin; r < end; ++r) {
            float* row = y.data() + r * cols;
            for (std::size_t c = 0; c < cols; ++c) row[c] += b.data()[c];
            xgrad::simd::sigmoid(row, row, cols);
        }
    });
}

// d = 0 where the ReLU output h was 0.
void relu_mask(const Tensor& h, Tensor& d) {
    const float* hp = h.data();
    float* dp = d.data();
    for (std::size_t i = 0; i < d.size(); ++i) dp[i] = hp[i] > 0.f ? dp[i] : 0.f;
}

void column_sums(const Tensor& m, Tensor& sums, float beta) {
    const std::size_t rows = m.shape()[0], cols = m.shape()[1];
    float* out = sums.data();
    for (std::size_t c = 0; c < cols; ++c) out[c] *= beta;
    for (std::size_t r = 0; r < rows; ++r) {
        const float* row = m.data() + r * cols;
        for (std::size_t c = 0; c < cols; ++c) out[c] += row[c];
    }
}

// Mean BCE of sigmoid(logits) against `target`, and d loss / d logits.
float bce(const Tensor& logits, float target, Tensor& dlogits) {
    const float n = static_cast<float>(logits.size());
    float loss = 0.f;
    for (std::size_t i = 0; i < logits.size(); ++i) {
        const float x = logits.data()[i];
        loss += std::max(x, 0.f) - x * target + std::log1p(std::exp(-std::abs(x)));
        dlogits.data()[i] = (1.f / (1.f + std::exp(-x)) - target) / n;
    }
    return loss / n;
}

// One fused Adam pass over a parameter, split over the threads, with
// subnormals flushed to zero as xgrad's optimizers do (x86 takes a slow path
// on them; flush-to-zero is a per-thread mode).
void adam_update(Tensor& p, const Tensor& g, Tensor& m, Tensor& v, const xgrad::simd::AdamConstants& c) {
    float *pp = p.data(), *mp = m.data(), *vp = v.data();
    const float* gp = g.data();
    xgrad::parallel_for(p.size(), 32768, [&](std::size_t begin, std::size_t end) {
        const unsigned saved_csr = _mm_getcsr();
        _mm_setcsr(saved_csr | 0x8040u);
        xgrad::simd::adam(pp + begin, gp + begin, mp + begin, vp + begin, end - begin, c);
        _mm_setcsr(saved_csr);
    });
}

class HandWrittenStep {
public:
    explicit HandWrittenStep(gan::Gan& gan)
        : rng_(gan.rng()),
          d1_(static_cast<xgrad::Linear&>(gan.discriminator()[0])),
          d2_(static_cast<xgrad::Linear&>(gan.discriminator()[2])),
          g1_(static_cast<xgrad::Linear&>(gan.generator()[0])),
          g2_(static_cast<xgrad::Linear&>(gan.generator()[2])) {
        const gan::GanConfig& c = gan.config();
        const std::size_t m = c.batch, h = c.hidden;
        lr_ = c.lr, beta1_ = c.beta1, beta2_ = c.beta2;
        for (Tensor* t : {&real_, &fake_, &dfake_}) t->resize({m, c.data_dim});
        noise_.resize({m, c.z_dim});
        for (Tensor* t : {&g_hidden_, &d_hidden_real_, &d_hidden_fake_, &dd_hidden_real_, &dd_hidden_fake_, &dg_hidden_}) {
            t->resize({m, h});
        }
        for (Tensor* t : {&logits_real_, &logits_fake_, &dlogits_real_, &dlogits_fake_}) t->resize({m, 1});
    }

    std::array<const Tensor*, 8> parameters() const { return {&g1_.w, &g1_.b, &g2_.w, &g2_.b, &d1_.w, &d1_.b, &d2_.w, &d2_.b}; }

    void step(gan::DataSource& data) {
        product_count_ = 0;
        discriminator_step(data);
        generator_step();
        ++t_;
    }

    // The step's products alone, as recorded by the last step().
    void products_only() {
        for (std::size_t i = 0; i < product_count_; ++i) multiply(products_[i]);
    }
    std::size_t product_count() const { return product_count_; }
    float d_loss() const { return d_loss_; }
    float g_loss() const { return g_loss_; }

private:
    void product(const Tensor& a, bool ta, const Tensor& b, bool tb, Tensor& c, float beta = 0.f) {
        const Product p{&a, ta, &b, tb, &c, beta};
        multiply(p);
        if (product_count_ < products_.size()) products_[product_count_] = p;
        ++product_count_;
    }

    static void multiply(const Product& p) {
        xgrad::gemm("floor", xgrad::as_matrix(*p.a), p.transpose_a, xgrad::as_matrix(*p.b), p.transpose_b, xgrad::as_matrix(*p.c),
                    p.beta);
    }

    void generator_forward() {
        product(noise_, false, g1_.w, true, g_hidden_);
        add_bias_relu(g_hidden_, g1_.b);
        product(g_hidden_, false, g2_.w, true, fake_);
        add_bias_sigmoid(fake_, g2_.b);
    }

    void discriminator_forward(const Tensor& x, Tensor& hidden, Tensor& logits) {
        product(x, false, d1_.w, true, hidden);
        add_bias_relu(hidden, d1_.b);
        product(hidden, false, d2_.w, true, logits);
        logits += d2_.b(0);
    }

    // From d loss / d logits down to d loss / d hidden (pre-activation),
    // through the ReLU mask.
    void discriminator_hidden_grad(const Tensor& dlogits, const Tensor& hidden, Tensor& dhidden) {
        product(dlogits, false, d2_.w, false, dhidden);
        relu_mask(hidden, dhidden);
    }

    void discriminator_step(gan::DataSource& data) {
        data.sample(real_, rng_);
        rng_.fill_uniform(noise_, -1.f, 1.f);
        generator_forward();
        discriminator_forward(real_, d_hidden_real_, logits_real_);
        discriminator_forward(fake_, d_hidden_fake_, logits_fake_);
        d_loss_ = bce(logits_real_, 1.f, dlogits_real_) + bce(logits_fake_, 0.f, dlogits_fake_);

        product(dlogits_real_, true, d_hidden_real_, false, d2_.dw);
        product(dlogits_fake_, true, d_hidden_fake_, false, d2_.dw, 1.f);
        d2_.db(0) = total(dlogits_real_) + total(dlogits_fake_);
        discriminator_hidden_grad(dlogits_real_, d_hidden_real_, dd_hidden_real_);
        discriminator_hidden_grad(dlogits_fake_, d_hidden_fake_, dd_hidden_fake_);
        product(dd_hidden_real_, true, real_, false, d1_.dw);
        product(dd_hidden_fake_, true, fake_, false, d1_.dw, 1.f);
        column_sums(dd_hidden_real_, d1_.db, 0.f);
        column_sums(dd_hidden_fake_, d1_.db, 1.f);
        adam({&d1_, &d2_});
    }

    void generator_step() {
        rng_.fill_uniform(noise_, -1.f, 1.f);
        generator_forward();
        discriminator_forward(fake_, d_hidden_fake_, logits_fake_);
        g_loss_ = bce(logits_fake_, 1.f, dlogits_fake_);

        discriminator_hidden_grad(dlogits_fake_, d_hidden_fake_, dd_hidden_fake_);
        product(dd_hidden_fake_, false, d1_.w, false, dfake_);
        for (std::size_t i = 0; i < dfake_.size(); ++i) dfake_.data()[i] *= fake_.data()[i] * (1.f - fake_.data()[i]);
        product(dfake_, true, g_hidden_, false, g2_.dw);
        column_sums(dfake_, g2_.db, 0.f);
        product(dfake_, false, g2_.w, false, dg_hidden_);
        relu_mask(g_hidden_, dg_hidden_);
        product(dg_hidden_, true, noise_, false, g1_.dw);
        column_sums(dg_hidden_, g1_.db, 0.f);
        adam({&g1_, &g2_});
    }

    void adam(std::initializer_list<Layer*> layers) {
        const long t = t_ + 1;
        const xgrad::simd::AdamConstants c{beta1_,
                                           beta2_,
                                           static_cast<float>(double(lr_) / (1.0 - std::pow(double(beta1_), double(t)))),
                                           static_cast<float>(1.0 / std::sqrt(1.0 - std::pow(double(beta2_), double(t)))),
                                           1e-8f,
                                           1.f};
        for (Layer* l : layers) {
            adam_update(l->w, l->dw, l->mw, l->vw, c);
            adam_update(l->b, l->db, l->mb, l->vb, c);
        }
    }

    xgrad::Rng rng_;
    Layer d1_, d2_, g1_, g2_;
    float lr_ = 0, beta1_ = 0, beta2_ = 0;
    long t_ = 0;
    Tensor real_, fake_, dfake_, noise_, g_hidden_, dg_hidden_;
    Tensor d_hidden_real_, d_hidden_fake_, dd_hidden_real_, dd_hidden_fake_;
    Tensor logits_real_, logits_fake_, dlogits_real_, dlogits_fake_;
    float d_loss_ = 0, g_loss_ = 0;
    std::array<Product, 21> products_{};
    std::size_t product_count_ = 0;
};

// ---- measurement -------------------------------------------------------------

struct Options {
    int threads = 1;
    bool openblas_threads = false;  // thread inside OpenBLAS instead of xgrad's row blocks
    int rounds = 30;
    int steps = 40;  // per round and contender
    std::uint64_t seed = 1;
};

Options parse(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        const bool has_value = i + 1 < argc;
        if (arg == "--threads" && has_value) {
            o.threads = std::atoi(argv[++i]);
        } else if (arg == "--openblas-threads") {
            o.openblas_threads = true;
        } else if (arg == "--rounds" && has_value) {
            o.rounds = std::atoi(argv[++i]);
        } else if (arg == "--steps" && has_value) {
            o.steps = std::atoi(argv[++i]);
        } else if (arg == "--seed" && has_value) {
            o.seed = std::strtoull(argv[++i], nullptr, 10);
        } else {
            std::fprintf(stderr, "usage: %s [--threads N [--openblas-threads]] [--rounds R] [--steps S] [--seed N]\n", argv[0]);
            std::exit(arg == "--help" ? 0 : 2);
        }
    }
    if (o.threads < 1 || o.rounds < 1 || o.steps < 1) {
        std::fprintf(stderr, "gan_step: --threads, --rounds and --steps must be positive\n");
        std::exit(2);
    }
    return o;
}

// Runs f `steps` times, appending each duration (ms) and counting the
// allocations made inside f.
template <class F>
void timed(int steps, std::vector<double>& times, long& allocs, F&& f) {
    for (int s = 0; s < steps; ++s) {
        const auto t0 = Clock::now();
        allocs += alloc_counter::during(f);
        times.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    }
}

float max_difference(const std::vector<Var>& a, const std::vector<const Tensor*>& b) {
    float worst = 0.f;
    for (std::size_t i = 0; i < a.size(); ++i) worst = std::max(worst, xt::amax(xt::abs(a[i].value() - *b[i]))());
    return worst;
}

}  // namespace

int main(int argc, char** argv) {
    const Options o = parse(argc, argv);
    const char* coretype = std::getenv("OPENBLAS_CORETYPE");
    const char* simd_request = std::getenv("XGRAD_SIMD");
    const char* simd = xgrad::simd::name(xgrad::simd::level());

    const gan::GanConfig config = gan::reference_preset();
    gan::Gan gan(config, o.seed);
    bench::SyntheticImages data(2048, config.data_dim, o.seed + 1);
    HandWrittenStep floor(gan);

    // The floor must compute xgrad's update: one step each from the same
    // state, on one thread, so that every product is one BLAS call.
    xgrad::set_num_threads(1);
    auto blas_calls = [] { return bench::sgemm_calls.load() + bench::sgemv_calls.load(); };
    const long calls_before = blas_calls(), sgemv_before = bench::sgemv_calls.load();
    const gan::StepStats stats = gan.step(data);
    const long xgrad_calls = blas_calls() - calls_before, xgrad_sgemv = bench::sgemv_calls.load() - sgemv_before;
    floor.step(data);
    const long floor_calls = blas_calls() - calls_before - xgrad_calls;
    std::vector<Var> xgrad_parameters = gan.generator().parameters();
    for (const Var& p : gan.discriminator().parameters()) xgrad_parameters.push_back(p);
    const auto floor_parameters = floor.parameters();
    const float difference = std::max({max_difference(xgrad_parameters, {floor_parameters.begin(), floor_parameters.end()}),
                                       std::abs(stats.d_loss - floor.d_loss()), std::abs(stats.g_loss - floor.g_loss())});
    if (floor.product_count() != 21 || xgrad_calls != floor_calls || !(difference < 1e-4f)) {
        std::fprintf(stderr,
                     "gan_step: xgrad and the hand-written step differ: %ld vs %ld BLAS calls (%zu products in the floor, "
                     "21 expected), max |difference| %g\n",
                     xgrad_calls, floor_calls, floor.product_count(), double(difference));
        return 1;
    }

    if (o.openblas_threads) {
        xgrad::set_num_threads(1);
        openblas_set_num_threads(o.threads);
    } else {
        xgrad::set_num_threads(o.threads);
    }

    const int warmup = 50;
    for (int i = 0; i < warmup; ++i) {
        gan.step(data);
        floor.step(data);
        floor.products_only();
    }

    std::vector<double> xgrad_ms, floor_ms, blas_ms;
    for (auto* v : {&xgrad_ms, &floor_ms, &blas_ms}) v->reserve(std::size_t(o.rounds) * std::size_t(o.steps));
    long xgrad_allocs = 0, floor_allocs = 0, blas_allocs = 0;
    const std::string load_before = bench::load_average();
    for (int r = 0; r < o.rounds; ++r) {
        timed(o.steps, xgrad_ms, xgrad_allocs, [&] { gan.step(data); });
        timed(o.steps, floor_ms, floor_allocs, [&] { floor.step(data); });
        timed(o.steps, blas_ms, blas_allocs, [&] { floor.products_only(); });
    }
    const double n = double(xgrad_ms.size());
    const double xgrad_median = bench::percentile(xgrad_ms, 0.5), floor_median = bench::percentile(floor_ms, 0.5);
    const double blas_median = bench::percentile(blas_ms, 0.5);
    const double ratio = xgrad_median / floor_median;
    const double allocs_per_step = double(xgrad_allocs) / n;
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    const double peak_rss_mib = double(usage.ru_maxrss) / 1024.0;
    const int threads = o.openblas_threads ? openblas_get_num_threads() : xgrad::num_threads();

    std::printf("gan_step: reference preset (D %zu-%zu-1, G %zu-%zu-%zu, batch %zu, k=%zu, Adam)\n", config.data_dim,
                config.hidden, config.z_dim, config.hidden, config.data_dim, config.batch, config.k);
    std::printf("threads %d (%s), OpenBLAS threads %d, OPENBLAS_CORETYPE %s, load average %s before / %s after timing\n", threads,
                o.openblas_threads ? "inside OpenBLAS" : "xgrad row blocks", openblas_get_num_threads(),
                coretype ? coretype : "unset", load_before.c_str(), bench::load_average().c_str());
    std::printf("SIMD level %s (xgrad::simd; best on this CPU %s; XGRAD_SIMD %s)\n", simd,
                xgrad::simd::name(xgrad::simd::best_level()), simd_request ? simd_request : "unset");
    std::printf(
        "check: xgrad step = hand-written step: %ld BLAS calls each (%ld sgemm + %ld sgemv), max |difference| of losses\n"
        "       and parameters %.1e after one step\n",
        xgrad_calls, xgrad_calls - xgrad_sgemv, xgrad_sgemv, double(difference));
    std::printf("%d rounds x %d steps each, interleaved; ms per step: median (p10 .. p90)\n", o.rounds, o.steps);
    auto row = [](const char* name, double median, const std::vector<double>& ms) {
        std::printf("  %-30s %7.3f (%.3f .. %.3f)\n", name, median, bench::percentile(ms, 0.1), bench::percentile(ms, 0.9));
    };
    row("xgrad step", xgrad_median, xgrad_ms);
    row("floor: hand-written step", floor_median, floor_ms);
    row("floor: its 21 products only", blas_median, blas_ms);
    std::printf("ratio xgrad / floor              %7.3f\n", ratio);
    std::printf("allocations per step             %g xgrad, %g floor, %g products only\n", allocs_per_step,
                double(floor_allocs) / n, double(blas_allocs) / n);
    std::printf("peak RSS                         %.1f MiB\n", peak_rss_mib);
    std::printf(
        "RESULT ms_per_step=%.3f floor_ms=%.3f ratio=%.3f allocs_per_step=%g peak_rss_mib=%.1f threads=%d blas_ms=%.3f simd=%s\n",
        xgrad_median, floor_median, ratio, allocs_per_step, peak_rss_mib, threads, blas_median, simd);
    return 0;
}
