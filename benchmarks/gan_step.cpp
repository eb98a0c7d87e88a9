// One GAN training step of the reference preset, timed against its floor.
//
// The floor is the same step written by hand for this one network: its 21
// sgemm calls at the exact shapes into preallocated buffers, plus one
// vectorised pass for each piece of elementwise work (bias + activation,
// BCE loss and gradient, ReLU masks, column sums, Adam), with hand-derived
// gradients and no allocation. It draws its batches and noise through the
// same DataSource and Rng calls. A check before timing runs both from the
// same state and compares the parameters after one step, so the floor
// provably computes the same update.
//
// Both are measured in the same process, interleaved round by round, so that
// load from elsewhere affects both alike; the ratio is what to read.
// Heap allocations are counted by interposing the C allocator (xtensor's
// aligned allocator calls it directly, operator new calls it as well), only
// while a step runs.
//
//   build-perf/benchmarks/gan_step [--threads N] [--rounds R] [--steps S] [--seed N]
#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <initializer_list>
#include <new>
#include <string>
#include <vector>

#include <sys/resource.h>

#include <xtensor-blas/xblas.hpp>
#include <xtensor/xmath.hpp>
#include <xtensor/xnoalias.hpp>
#include <xtensor/xoperation.hpp>

#include "gan.hpp"

extern "C" void openblas_set_num_threads(int);
extern "C" int openblas_get_num_threads();

// ---- allocation counting --------------------------------------------------
// glibc lets a program define the allocator entry points and forward to its
// __libc_* internals; every library in the process then calls these.

extern "C" {
void* __libc_malloc(std::size_t);
void* __libc_calloc(std::size_t, std::size_t);
void* __libc_realloc(void*, std::size_t);
void* __libc_memalign(std::size_t, std::size_t);
void __libc_free(void*);
}

namespace {
std::atomic<bool> counting{false};
std::atomic<long> allocations{0};
inline void count_allocation() {
    if (counting.load(std::memory_order_relaxed)) allocations.fetch_add(1, std::memory_order_relaxed);
}
}  // namespace

extern "C" {
void* malloc(std::size_t n) {
    count_allocation();
    return __libc_malloc(n);
}
void* calloc(std::size_t count, std::size_t n) {
    count_allocation();
    return __libc_calloc(count, n);
}
void* realloc(void* p, std::size_t n) {
    count_allocation();
    return __libc_realloc(p, n);
}
void* memalign(std::size_t alignment, std::size_t n) {
    count_allocation();
    return __libc_memalign(alignment, n);
}
void* aligned_alloc(std::size_t alignment, std::size_t n) {
    count_allocation();
    return __libc_memalign(alignment, n);
}
int posix_memalign(void** out, std::size_t alignment, std::size_t n) {
    if (alignment < sizeof(void*) || (alignment & (alignment - 1)) != 0) return EINVAL;
    count_allocation();
    void* p = __libc_memalign(alignment, n);
    if (!p) return ENOMEM;
    *out = p;
    return 0;
}
void free(void* p) { __libc_free(p); }
}

// libstdc++'s operator new already calls malloc; replacing it makes the
// counting independent of how the C++ runtime is built.
void* operator new(std::size_t n) {
    if (void* p = std::malloc(n)) return p;
    throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return operator new(n); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }

namespace {

using xgrad::Tensor;
using xgrad::Var;
using Clock = std::chrono::steady_clock;

// Real images come from memory with one memcpy per row; so do these.
class SyntheticImages : public gan::DataSource {
public:
    SyntheticImages(std::size_t count, std::size_t dim, std::uint64_t seed) : images_({count, dim}) {
        xgrad::Rng rng(seed);
        rng.fill_uniform(images_, 0.f, 1.f);
    }
    std::size_t dim() const override { return images_.shape()[1]; }
    void sample(Tensor& batch, xgrad::Rng& rng) override {
        const std::size_t rows = batch.shape()[0], dim = this->dim();
        for (std::size_t r = 0; r < rows; ++r) {
            std::memcpy(batch.data() + r * dim, images_.data() + rng.below(images_.shape()[0]) * dim, dim * sizeof(float));
        }
    }

private:
    Tensor images_;
};

// ---- the floor: the reference step written by hand -------------------------

struct Gemm {
    const Tensor* a;
    bool transpose_a;
    const Tensor* b;
    bool transpose_b;
    Tensor* c;
    float beta;
};

// Weights, bias, their gradients and Adam moments of one dense layer.
struct Layer {
    Tensor w, b, dw, db, mw, vw, mb, vb;
    explicit Layer(const xgrad::Linear& l)
        : w(l.weight.value()), b(l.bias.value()), dw(w.shape()), db(b.shape()), mw(w.shape(), 0.f), vw(w.shape(), 0.f),
          mb(b.shape(), 0.f), vb(b.shape(), 0.f) {}
};

float total(const Tensor& t) {
    float s = 0.f;
    for (float x : t) s += x;
    return s;
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
    xt::noalias(dlogits) = (1.f / (1.f + xt::exp(-logits)) - target) / n;
    float total = 0.f;
    for (float x : logits) total += std::max(x, 0.f) - x * target + std::log1p(std::exp(-std::abs(x)));
    return total / n;
}

class HandWrittenStep {
public:
    HandWrittenStep(gan::Gan& gan, const xgrad::Rng& rng)
        : rng_(rng),
          d1_(static_cast<xgrad::Linear&>(gan.discriminator()[0])),
          d2_(static_cast<xgrad::Linear&>(gan.discriminator()[2])),
          g1_(static_cast<xgrad::Linear&>(gan.generator()[0])),
          g2_(static_cast<xgrad::Linear&>(gan.generator()[2])) {
        const gan::GanConfig& c = gan.config();
        const std::size_t m = c.batch, h = c.hidden;
        lr_ = c.lr, beta1_ = c.beta1, beta2_ = c.beta2;
        for (Tensor* t : {&real_, &fake_, &dfake_}) t->resize({m, c.data_dim});
        for (Tensor* t : {&noise_}) t->resize({m, c.z_dim});
        for (Tensor* t : {&g_hidden_, &d_hidden_real_, &d_hidden_fake_, &dd_hidden_real_, &dd_hidden_fake_, &dg_hidden_}) {
            t->resize({m, h});
        }
        for (Tensor* t : {&logits_real_, &logits_fake_, &dlogits_real_, &dlogits_fake_}) t->resize({m, 1});
    }

    std::array<const Tensor*, 8> parameters() const {
        return {&g1_.w, &g1_.b, &g2_.w, &g2_.b, &d1_.w, &d1_.b, &d2_.w, &d2_.b};
    }

    void step(gan::DataSource& data) {
        gemm_count_ = 0;
        discriminator_step(data);
        generator_step();
        ++t_;
    }

    // The step's sgemm calls alone, as recorded by the last step().
    void gemms_only() {
        for (std::size_t i = 0; i < gemm_count_; ++i) {
            const Gemm& g = gemms_[i];
            xt::blas::gemm(*g.a, *g.b, *g.c, g.transpose_a, g.transpose_b, 1.f, g.beta);
        }
    }
    std::size_t gemm_count() const { return gemm_count_; }
    float d_loss() const { return d_loss_; }
    float g_loss() const { return g_loss_; }

private:
    void gemm(const Tensor& a, bool ta, const Tensor& b, bool tb, Tensor& c, float beta = 0.f) {
        xt::blas::gemm(a, b, c, ta, tb, 1.f, beta);
        if (gemm_count_ < gemms_.size()) gemms_[gemm_count_] = {&a, ta, &b, tb, &c, beta};
        ++gemm_count_;
    }

    void generator_forward() {
        gemm(noise_, false, g1_.w, false, g_hidden_);
        xt::noalias(g_hidden_) = xt::maximum(g_hidden_ + g1_.b, 0.f);
        gemm(g_hidden_, false, g2_.w, false, fake_);
        xt::noalias(fake_) = 1.f / (1.f + xt::exp(-(fake_ + g2_.b)));
    }

    void discriminator_forward(const Tensor& x, Tensor& hidden, Tensor& logits) {
        gemm(x, false, d1_.w, false, hidden);
        xt::noalias(hidden) = xt::maximum(hidden + d1_.b, 0.f);
        gemm(hidden, false, d2_.w, false, logits);
        logits += d2_.b(0, 0);
    }

    // From d loss / d logits down to d loss / d hidden (pre-activation),
    // through the ReLU mask.
    void discriminator_hidden_grad(const Tensor& dlogits, const Tensor& hidden, Tensor& dhidden) {
        gemm(dlogits, false, d2_.w, true, dhidden);
        xt::noalias(dhidden) = xt::where(hidden > 0.f, dhidden, 0.f);
    }

    void discriminator_step(gan::DataSource& data) {
        data.sample(real_, rng_);
        rng_.fill_uniform(noise_, -1.f, 1.f);
        generator_forward();
        discriminator_forward(real_, d_hidden_real_, logits_real_);
        discriminator_forward(fake_, d_hidden_fake_, logits_fake_);
        d_loss_ = bce(logits_real_, 1.f, dlogits_real_) + bce(logits_fake_, 0.f, dlogits_fake_);

        gemm(d_hidden_real_, true, dlogits_real_, false, d2_.dw);
        gemm(d_hidden_fake_, true, dlogits_fake_, false, d2_.dw, 1.f);
        d2_.db(0, 0) = total(dlogits_real_) + total(dlogits_fake_);
        discriminator_hidden_grad(dlogits_real_, d_hidden_real_, dd_hidden_real_);
        discriminator_hidden_grad(dlogits_fake_, d_hidden_fake_, dd_hidden_fake_);
        gemm(real_, true, dd_hidden_real_, false, d1_.dw);
        gemm(fake_, true, dd_hidden_fake_, false, d1_.dw, 1.f);
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
        gemm(dd_hidden_fake_, false, d1_.w, true, dfake_);
        xt::noalias(dfake_) = dfake_ * fake_ * (1.f - fake_);
        gemm(g_hidden_, true, dfake_, false, g2_.dw);
        column_sums(dfake_, g2_.db, 0.f);
        gemm(dfake_, false, g2_.w, true, dg_hidden_);
        xt::noalias(dg_hidden_) = xt::where(g_hidden_ > 0.f, dg_hidden_, 0.f);
        gemm(noise_, true, dg_hidden_, false, g1_.dw);
        column_sums(dg_hidden_, g1_.db, 0.f);
        adam({&g1_, &g2_});
    }

    void adam(std::initializer_list<Layer*> layers) {
        const long t = t_ + 1;
        const float step_size = lr_ / (1.f - static_cast<float>(std::pow(double(beta1_), double(t))));
        const float inv_sqrt_c2 = 1.f / std::sqrt(1.f - static_cast<float>(std::pow(double(beta2_), double(t))));
        auto update = [&](Tensor& p, const Tensor& g, Tensor& m, Tensor& v) {
            xt::noalias(m) = beta1_ * m + (1.f - beta1_) * g;
            xt::noalias(v) = beta2_ * v + (1.f - beta2_) * g * g;
            xt::noalias(p) -= step_size * m / (xt::sqrt(v) * inv_sqrt_c2 + 1e-8f);
        };
        for (Layer* l : layers) {
            update(l->w, l->dw, l->mw, l->vw);
            update(l->b, l->db, l->mb, l->vb);
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
    std::array<Gemm, 21> gemms_{};
    std::size_t gemm_count_ = 0;
};

// ---- measurement -------------------------------------------------------------

struct Options {
    int threads = 1;
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
        } else if (arg == "--rounds" && has_value) {
            o.rounds = std::atoi(argv[++i]);
        } else if (arg == "--steps" && has_value) {
            o.steps = std::atoi(argv[++i]);
        } else if (arg == "--seed" && has_value) {
            o.seed = std::strtoull(argv[++i], nullptr, 10);
        } else {
            std::fprintf(stderr, "usage: %s [--threads N] [--rounds R] [--steps S] [--seed N]\n", argv[0]);
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
        const long before = allocations.load();
        const auto t0 = Clock::now();
        counting = true;
        f();
        counting = false;
        const auto t1 = Clock::now();
        allocs += allocations.load() - before;
        times.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    }
}

double percentile(std::vector<double> v, double q) {
    const std::size_t i = static_cast<std::size_t>(q * double(v.size() - 1) + 0.5);
    std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(i), v.end());
    return v[i];
}

std::string load_average() {
    std::ifstream in("/proc/loadavg");
    std::string one;
    in >> one;
    return one.empty() ? "unknown" : one;
}

float max_difference(const std::vector<Var>& a, const std::vector<const Tensor*>& b) {
    float worst = 0.f;
    for (std::size_t i = 0; i < a.size(); ++i) worst = std::max(worst, xt::amax(xt::abs(a[i].value() - *b[i]))());
    return worst;
}

}  // namespace

int main(int argc, char** argv) {
    const Options o = parse(argc, argv);
    openblas_set_num_threads(o.threads);
    const char* coretype = std::getenv("OPENBLAS_CORETYPE");

    const gan::GanConfig config = gan::reference_preset();
    gan::Gan gan(config, o.seed);
    SyntheticImages data(2048, config.data_dim, o.seed + 1);
    HandWrittenStep floor(gan, gan.rng());

    // The floor must compute xgrad's update: one step each from the same state.
    gan.step(data);
    floor.step(data);
    std::vector<Var> xgrad_parameters = gan.generator().parameters();
    for (const Var& p : gan.discriminator().parameters()) xgrad_parameters.push_back(p);
    const auto floor_parameters = floor.parameters();
    const float difference = max_difference(xgrad_parameters, {floor_parameters.begin(), floor_parameters.end()});
    if (floor.gemm_count() != 21 || !(difference < 1e-4f)) {
        std::fprintf(stderr, "gan_step: the hand-written step disagrees with xgrad (%zu sgemm calls, max |difference| %g)\n",
                     floor.gemm_count(), double(difference));
        return 1;
    }

    const int warmup = 50;
    for (int i = 0; i < warmup; ++i) {
        gan.step(data);
        floor.step(data);
        floor.gemms_only();
    }

    std::vector<double> xgrad_ms, floor_ms, gemm_ms;
    for (auto* v : {&xgrad_ms, &floor_ms, &gemm_ms}) v->reserve(std::size_t(o.rounds) * std::size_t(o.steps));
    long xgrad_allocs = 0, floor_allocs = 0, gemm_allocs = 0;
    const std::string load_before = load_average();
    for (int r = 0; r < o.rounds; ++r) {
        timed(o.steps, xgrad_ms, xgrad_allocs, [&] { gan.step(data); });
        timed(o.steps, floor_ms, floor_allocs, [&] { floor.step(data); });
        timed(o.steps, gemm_ms, gemm_allocs, [&] { floor.gemms_only(); });
    }
    const double n = double(xgrad_ms.size());
    const double xgrad_median = percentile(xgrad_ms, 0.5), floor_median = percentile(floor_ms, 0.5);
    const double gemm_median = percentile(gemm_ms, 0.5);
    const double ratio = xgrad_median / floor_median;
    const double allocs_per_step = double(xgrad_allocs) / n;
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    const double peak_rss_mib = double(usage.ru_maxrss) / 1024.0;

    std::printf("gan_step: reference preset (D %zu-%zu-1, G %zu-%zu-%zu, batch %zu, k=%zu, Adam)\n", config.data_dim,
                config.hidden, config.z_dim, config.hidden, config.data_dim, config.batch, config.k);
    std::printf("OpenBLAS threads %d, OPENBLAS_CORETYPE %s, load average %s before / %s after timing\n",
                openblas_get_num_threads(), coretype ? coretype : "unset", load_before.c_str(), load_average().c_str());
    std::printf("check: hand-written step = xgrad step (max |parameter difference| %.1e after one step)\n", double(difference));
    std::printf("%d rounds x %d steps each, interleaved; ms per step: median (p10 .. p90)\n", o.rounds, o.steps);
    std::printf("  xgrad step               %7.3f (%.3f .. %.3f)\n", xgrad_median, percentile(xgrad_ms, 0.1),
                percentile(xgrad_ms, 0.9));
    std::printf("  floor: hand-written step %7.3f (%.3f .. %.3f)\n", floor_median, percentile(floor_ms, 0.1),
                percentile(floor_ms, 0.9));
    std::printf("  floor: its 21 sgemm only %7.3f (%.3f .. %.3f)\n", gemm_median, percentile(gemm_ms, 0.1),
                percentile(gemm_ms, 0.9));
    std::printf("ratio xgrad / floor        %7.3f\n", ratio);
    std::printf("allocations per step       %g xgrad, %g floor, %g sgemm only\n", allocs_per_step, double(floor_allocs) / n,
                double(gemm_allocs) / n);
    std::printf("peak RSS                   %.1f MiB\n", peak_rss_mib);
    std::printf("RESULT ms_per_step=%.3f floor_ms=%.3f ratio=%.3f allocs_per_step=%g peak_rss_mib=%.1f threads=%d sgemm_ms=%.3f\n",
                xgrad_median, floor_median, ratio, allocs_per_step, peak_rss_mib, openblas_get_num_threads(), gemm_median);
    return 0;
}
