// xgrad::simd: every kernel (forward, backward pieces, Adam) at every SIMD level this CPU supports, against a
// scalar double reference, on lengths around the batch sizes (4, 8 and 16
// lanes) so that every tail is exercised; NaN, infinities and saturated
// inputs where the kernel defines them; that nothing outside [0, n) is
// touched and that a result does not depend on an element's position; the
// level choice and its override. The op tests (test_ops, test_optim, ...)
// run at one level per process: run them with XGRAD_SIMD=sse2|avx2|avx512.
// Also lane_sum, the vectorised sum inside the norm kernels.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include <xgrad/core/lane_sum.hpp>
#include <xgrad/core/parallel.hpp>
#include <xgrad/core/random.hpp>
#include <xgrad/core/simd.hpp>
#include <xgrad/ops.hpp>

namespace {

namespace simd = xgrad::simd;
using simd::Level;

constexpr float kInf = std::numeric_limits<float>::infinity();
const float kNaN = std::numeric_limits<float>::quiet_NaN();

// Around every batch size, plus a long array with a tail of 3 at every
// width (16387 = 16 * 1024 + 3).
const std::size_t kLengths[] = {0, 1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 33, 1000, 16387};

std::string level_name(Level level) { return simd::name(level); }

std::vector<Level> supported_levels() {
    std::vector<Level> levels;
    for (Level l : {Level::sse2, Level::avx2, Level::avx512}) {
        if (simd::cpu_supports(l)) levels.push_back(l);
    }
    return levels;
}

// Runs the rest of a test at one level; restores the previous level after.
class AtLevel {
public:
    explicit AtLevel(Level level) : saved_(simd::level()) { simd::set_level(level); }
    ~AtLevel() { simd::set_level(saved_); }
    AtLevel(const AtLevel&) = delete;
    AtLevel& operator=(const AtLevel&) = delete;

private:
    Level saved_;
};

// y within `ulps` units in the last place of the float nearest to ref, or
// both below the smallest normal float (exp and sigmoid return 0 there
// instead of a subnormal), or the same special value.
bool close(float y, double ref, double ulps) {
    if (std::isnan(ref)) return std::isnan(y);
    if (std::isinf(ref)) return y == static_cast<float>(ref);
    const float r = static_cast<float>(ref);
    if (std::isinf(r)) return y == r;  // ref beyond float's range
    const double tiny = std::numeric_limits<float>::min();
    if (std::abs(ref) < tiny) return std::abs(double(y)) < tiny;
    const double ulp = std::nextafter(std::abs(r), kInf) - std::abs(r);
    return std::abs(double(y) - ref) <= ulps * ulp;
}

// n values: uniform in [lo, hi), or e^uniform for log (all magnitudes).
std::vector<float> inputs(std::size_t n, float lo, float hi, bool exponential, std::uint64_t seed) {
    xgrad::Rng rng(seed);
    std::vector<float> x(n);
    for (float& v : x) v = exponential ? std::exp(rng.uniform(lo, hi)) : rng.uniform(lo, hi);
    return x;
}

struct UnaryKernel {
    const char* name;
    void (*kernel)(const float*, float*, std::size_t);
    double (*ref)(double);
    float lo, hi;
    bool exponential;  // inputs e^[lo, hi)
    double ulps;       // accuracy over the random inputs
    // Special inputs and exact results (NaN: NaN).
    std::vector<std::pair<float, float>> specials;
};

double sigmoid_ref(double x) { return x >= 0 ? 1.0 / (1.0 + std::exp(-x)) : std::exp(x) / (1.0 + std::exp(x)); }
double softplus_ref(double x) { return std::max(x, 0.0) + std::log1p(std::exp(-std::abs(x))); }

const UnaryKernel kUnary[] = {
    {"exp",
     simd::exp,
     [](double x) { return std::exp(x); },
     -100.f,
     88.f,
     false,
     2,
     {{0.f, 1.f}, {-1000.f, 0.f}, {1000.f, kInf}, {-kInf, 0.f}, {kInf, kInf}, {kNaN, kNaN}}},
    {"log",
     simd::log,
     [](double x) { return std::log(x); },
     -80.f,
     80.f,
     true,
     1,
     {{1.f, 0.f}, {0.f, -kInf}, {-1.f, kNaN}, {kInf, kInf}, {-kInf, kNaN}, {kNaN, kNaN}}},
    {"sigmoid",
     simd::sigmoid,
     sigmoid_ref,
     -100.f,
     100.f,
     false,
     3,
     {{0.f, 0.5f}, {-1000.f, 0.f}, {1000.f, 1.f}, {-100.f, 0.f}, {30.f, 1.f}, {-kInf, 0.f}, {kInf, 1.f}, {kNaN, kNaN}}},
    {"tanh",
     simd::tanh,
     [](double x) { return std::tanh(x); },
     -10.f,
     10.f,
     false,
     2,
     {{0.f, 0.f}, {-1000.f, -1.f}, {1000.f, 1.f}, {-kInf, -1.f}, {kInf, 1.f}, {kNaN, kNaN}}},
    {"softplus",
     simd::softplus,
     softplus_ref,
     -30.f,
     30.f,
     false,
     3,
     {{-1000.f, 0.f}, {1000.f, 1000.f}, {-kInf, 0.f}, {kInf, kInf}, {kNaN, kNaN}}},
    {"relu",
     simd::relu,
     [](double x) { return x < 0 ? 0.0 : x; },
     -5.f,
     5.f,
     false,
     0,
     {{-1.f, 0.f}, {2.f, 2.f}, {-kInf, 0.f}, {kInf, kInf}, {kNaN, kNaN}}},
    {"leaky_relu 0.2",
     [](const float* x, float* y, std::size_t n) { simd::leaky_relu(x, y, n, 0.2f); },
     [](double x) { return x > 0 ? x : double(0.2f * static_cast<float>(x)); },
     -5.f,
     5.f,
     false,
     0,
     {{-1.f, -0.2f}, {2.f, 2.f}, {-kInf, -kInf}, {kInf, kInf}, {kNaN, kNaN}}},
};

// Backward pieces dx = f(a, dy), a the op's output or input.
struct BinaryKernel {
    const char* name;
    void (*kernel)(const float*, const float*, float*, std::size_t);
    double (*ref)(double a, double dy);
    float lo, hi;  // range of a
    bool exact;    // a select: dx is dy, slope * dy or 0, bit for bit
};

const BinaryKernel kBinary[] = {
    {"sigmoid_backward", simd::sigmoid_backward, [](double y, double dy) { return dy * y * (1 - y); }, 0.f, 1.f, false},
    {"tanh_backward", simd::tanh_backward, [](double y, double dy) { return dy * (1 - y * y); }, -1.f, 1.f, false},
    {"relu_backward", simd::relu_backward, [](double y, double dy) { return y > 0 ? dy : 0.0; }, -1.f, 1.f, true},
    {"leaky_relu_backward 0.2",
     [](const float* x, const float* dy, float* dx, std::size_t n) { simd::leaky_relu_backward(x, dy, dx, n, 0.2f); },
     [](double x, double dy) { return x > 0 ? dy : double(0.2f * static_cast<float>(dy)); }, -1.f, 1.f, true},
};

// Calls write(y) for an output array of n elements with a sentinel on each
// side, checks that the sentinels survive, and returns the n results.
template <class Write>
std::vector<float> run_guarded(std::size_t n, const Write& write) {
    const float sentinel = -12345.f;
    std::vector<float> y(n + 2, sentinel);
    write(y.data() + 1);
    CHECK(y.front() == sentinel);
    CHECK(y.back() == sentinel);
    return {y.begin() + 1, y.end() - 1};
}

// Calls f(k, n) for every kernel k of `kernels` and length n of kLengths, at
// every level this CPU supports.
template <class Kernels, class F>
void sweep(const Kernels& kernels, const F& f) {
    for (Level level : supported_levels()) {
        const AtLevel at(level);
        for (const auto& k : kernels) {
            for (std::size_t n : kLengths) {
                INFO(std::string(k.name) << " at " << level_name(level) << ", n = " << n);
                f(k, n);
            }
        }
    }
}

// ---- the level ------------------------------------------------------------------

TEST_CASE("the level in use is the best the CPU supports unless XGRAD_SIMD asks for a lower one") {
    CHECK(simd::cpu_supports(Level::sse2));
    CHECK(simd::cpu_supports(simd::best_level()));
    const simd::LevelChoice expected = simd::choose_level(std::getenv("XGRAD_SIMD"), simd::best_level());
    CHECK(simd::level() == expected.level);
    MESSAGE("SIMD level " << level_name(simd::level()) << ", best " << level_name(simd::best_level()));
}

TEST_CASE("choose_level honours known levels up to the best, and falls back to the best otherwise") {
    using C = simd::LevelChoice;
    const auto same = [](C a, C b) { return a.level == b.level && a.honoured == b.honoured; };
    CHECK(same(simd::choose_level(nullptr, Level::avx512), C{Level::avx512, true}));
    CHECK(same(simd::choose_level("", Level::avx2), C{Level::avx2, true}));
    CHECK(same(simd::choose_level("auto", Level::sse2), C{Level::sse2, true}));
    CHECK(same(simd::choose_level("sse2", Level::avx512), C{Level::sse2, true}));
    CHECK(same(simd::choose_level("avx2", Level::avx512), C{Level::avx2, true}));
    CHECK(same(simd::choose_level("avx512", Level::avx512), C{Level::avx512, true}));
    CHECK(same(simd::choose_level("avx512", Level::avx2), C{Level::avx2, false}));
    CHECK(same(simd::choose_level("avx2", Level::sse2), C{Level::sse2, false}));
    CHECK(same(simd::choose_level("AVX2", Level::avx512), C{Level::avx512, false}));
    CHECK(same(simd::choose_level("avx", Level::avx512), C{Level::avx512, false}));
    CHECK(level_name(Level::sse2) == "sse2");
    CHECK(level_name(Level::avx2) == "avx2");
    CHECK(level_name(Level::avx512) == "avx512");
}

TEST_CASE("set_level switches every supported level and refuses the others") {
    const Level saved = simd::level();
    for (Level l : {Level::sse2, Level::avx2, Level::avx512}) {
        INFO(level_name(l));
        if (simd::cpu_supports(l)) {
            simd::set_level(l);
            CHECK(simd::level() == l);
        } else {
            CHECK_THROWS_AS(simd::set_level(l), std::invalid_argument);
            CHECK(simd::level() != l);
        }
    }
    simd::set_level(saved);
    CHECK(simd::level() == saved);
}

// ---- the kernels ------------------------------------------------------------------

TEST_CASE("unary kernels match a double reference at every length and level") {
    sweep(kUnary, [](const UnaryKernel& k, std::size_t n) {
        const std::vector<float> x = inputs(n, k.lo, k.hi, k.exponential, n + 1);
        const std::vector<float> y = run_guarded(n, [&](float* out) { k.kernel(x.data(), out, n); });
        std::size_t bad = 0;
        for (std::size_t i = 0; i < n; ++i) {
            if (!close(y[i], k.ref(x[i]), k.ulps) && bad++ < 3) {
                CHECK_MESSAGE(false, "x = " << x[i] << ": " << y[i] << ", expected " << k.ref(x[i]));
            }
        }
        CHECK(bad == 0);
    });
}

TEST_CASE("backward kernels match a double reference at every length and level") {
    sweep(kBinary, [](const BinaryKernel& k, std::size_t n) {
        const std::vector<float> a = inputs(n, k.lo, k.hi, false, n + 2), dy = inputs(n, -3.f, 3.f, false, n + 3);
        const std::vector<float> dx = run_guarded(n, [&](float* out) { k.kernel(a.data(), dy.data(), out, n); });
        // Within a few roundings of |dy| (1 - y^2 cancels near |y| = 1).
        const double eps = 4 * std::numeric_limits<float>::epsilon();
        std::size_t bad = 0;
        for (std::size_t i = 0; i < n; ++i) {
            const double ref = k.ref(a[i], dy[i]);
            const bool ok = k.exact ? dx[i] == static_cast<float>(ref) : std::abs(dx[i] - ref) <= eps * std::abs(dy[i]);
            if (!ok && bad++ < 3) {
                CHECK_MESSAGE(false, "a = " << a[i] << ", dy = " << dy[i] << ": " << dx[i] << ", expected " << ref);
            }
        }
        CHECK(bad == 0);
    });
}

TEST_CASE("backward kernels pass a NaN gradient on") {
    for (Level level : supported_levels()) {
        const AtLevel at(level);
        for (const BinaryKernel& k : kBinary) {
            INFO(std::string(k.name) << " at " << level_name(level));
            const std::vector<float> a(17, 0.5f), dy(17, kNaN);
            std::vector<float> dx(17);
            k.kernel(a.data(), dy.data(), dx.data(), dx.size());
            for (float v : dx) CHECK(std::isnan(v));
        }
    }
}

TEST_CASE("unary kernels give the exact limits at special inputs, in the body and in the tail") {
    for (Level level : supported_levels()) {
        const AtLevel at(level);
        for (const UnaryKernel& k : kUnary) {
            // Each special at index 0 (a full batch) and at the last index of
            // 17 (a tail at every width), in place.
            for (const std::pair<float, float>& special : k.specials) {
                const float input = special.first, expected = special.second;  // clang 14 cannot capture bindings in INFO
                INFO(std::string(k.name) << " at " << level_name(level) << " of " << input);
                std::vector<float> x(17, 0.5f);
                x.front() = x.back() = input;
                k.kernel(x.data(), x.data(), x.size());
                for (float y : {x.front(), x.back()}) {
                    if (std::isnan(expected)) {
                        CHECK(std::isnan(y));
                    } else {
                        CHECK(y == expected);
                    }
                }
            }
        }
    }
}

TEST_CASE("relu keeps NaN and the sign of zero") {
    for (Level level : supported_levels()) {
        const AtLevel at(level);
        INFO(level_name(level));
        const float x[] = {-0.f, 0.f, kNaN, -kNaN};
        float y[4];
        simd::relu(x, y, 4);
        CHECK((y[0] == 0.f && std::signbit(y[0])));
        CHECK((y[1] == 0.f && !std::signbit(y[1])));
        CHECK(std::isnan(y[2]));
        CHECK(std::isnan(y[3]));
    }
}

TEST_CASE("an element's result depends only on its value, not on its position or the thread split") {
    // Head and tail go through the same batch code as the body: the results
    // of one long call equal those of calls on single elements, bit for bit.
    for (Level level : supported_levels()) {
        const AtLevel at(level);
        for (const UnaryKernel& k : kUnary) {
            INFO(std::string(k.name) << " at " << level_name(level));
            const std::vector<float> x = inputs(37, k.lo, k.hi, k.exponential, 5);
            std::vector<float> whole(x.size()), single(x.size());
            k.kernel(x.data(), whole.data(), x.size());
            for (std::size_t i = 0; i < x.size(); ++i) k.kernel(&x[i], &single[i], 1);
            CHECK(std::memcmp(whole.data(), single.data(), x.size() * sizeof(float)) == 0);
        }
    }
}

TEST_CASE("ops run at the chosen level, and give the same bits on 1 and 2 threads") {
    xgrad::Tensor t = xgrad::Tensor::from_shape({5, 40001});  // several ranges, each with a tail
    xgrad::Rng(3).fill_uniform(t, -6.f, 6.f);
    const xgrad::Var x(t);
    for (Level level : supported_levels()) {
        const AtLevel at(level);
        INFO(level_name(level));
        std::vector<float> direct(t.size());
        simd::sigmoid(t.data(), direct.data(), t.size());
        const xgrad::Tensor one = xgrad::sigmoid(x).value();
        xgrad::set_num_threads(2);
        const xgrad::Tensor two = xgrad::sigmoid(x).value();
        xgrad::set_num_threads(1);
        CHECK(std::memcmp(one.data(), direct.data(), t.size() * sizeof(float)) == 0);
        CHECK(std::memcmp(two.data(), direct.data(), t.size() * sizeof(float)) == 0);
    }
}

TEST_CASE("adam matches a double reference at every length and level") {
    const simd::AdamConstants c{0.9f, 0.999f, 1e-3f / (1.f - 0.9f), 1.f / std::sqrt(1.f - 0.999f), 1e-8f, 1.f - 1e-3f * 0.01f};
    for (Level level : supported_levels()) {
        const AtLevel at(level);
        for (std::size_t n : kLengths) {
            INFO(level_name(level) << ", n = " << n);
            std::vector<float> p = inputs(n, -1.f, 1.f, false, 11), g = inputs(n, -1.f, 1.f, false, 12);
            std::vector<float> m = inputs(n, -0.1f, 0.1f, false, 13), v = inputs(n, 0.f, 0.01f, false, 14);
            if (n > 0) g[n - 1] = 0.f;  // a dead unit: the moment only decays
            const std::vector<float> p0 = p, m0 = m, v0 = v;
            // Sentinels after each array: the kernel writes p, m and v.
            for (auto* a : {&p, &m, &v}) a->push_back(-7.f);
            simd::adam(p.data(), g.data(), m.data(), v.data(), n, c);
            for (auto* a : {&p, &m, &v}) CHECK(a->back() == -7.f);
            // Each within a few float roundings of the sizes of its terms
            // (m and v may cancel to far smaller values than their terms).
            const double eps = 8 * std::numeric_limits<float>::epsilon();
            std::size_t bad = 0;
            for (std::size_t i = 0; i < n; ++i) {
                const double m_decay = double(c.beta1) * m0[i], m_new = (1.0 - double(c.beta1)) * g[i];
                const double v_decay = double(c.beta2) * v0[i], v_new = (1.0 - double(c.beta2)) * double(g[i]) * g[i];
                const double mi = m_decay + m_new, vi = v_decay + v_new;
                const double p_keep = double(c.keep) * p0[i];
                const double p_step = double(c.step_size) * mi / (std::sqrt(vi) * c.inv_sqrt_c2 + c.eps);
                const bool ok = std::abs(m[i] - mi) <= eps * (std::abs(m_decay) + std::abs(m_new)) &&
                                std::abs(v[i] - vi) <= eps * (v_decay + v_new) &&
                                std::abs(p[i] - (p_keep - p_step)) <= eps * (std::abs(p_keep) + std::abs(p_step));
                if (!ok && bad++ < 3) {
                    CHECK_MESSAGE(false, "i = " << i << ": p " << p[i] << " vs " << p_keep - p_step << ", m " << m[i] << " vs "
                                                << mi << ", v " << v[i] << " vs " << vi);
                }
            }
            CHECK(bad == 0);
        }
    }
}

// lane_sum's order of additions, written out one float at a time: lane
// i % 8 of each stretch of 512 terms, the terms after the last full eight
// in lane 0, the lanes combined pairwise and the stretches in double. The
// norm kernels' bits rest on this order.
double lane_sum_reference(const std::vector<float>& terms) {
    double total = 0.0;
    for (std::size_t start = 0; start < terms.size(); start += 512) {
        const std::size_t end = std::min(terms.size(), start + 512), full = start + (end - start) / 8 * 8;
        float lane[8] = {};
        for (std::size_t i = start; i < full; ++i) lane[(i - start) % 8] += terms[i];
        for (std::size_t i = full; i < end; ++i) lane[0] += terms[i];
        total += double((lane[0] + lane[1]) + (lane[2] + lane[3])) + double((lane[4] + lane[5]) + (lane[6] + lane[7]));
    }
    return total;
}

TEST_CASE("lane_sum adds in its documented order, within float rounding of a double sum") {
    std::vector<std::size_t> lengths(std::begin(kLengths), std::end(kLengths));
    for (std::size_t n : {49, 196, 511, 512, 513, 1031}) lengths.push_back(n);
    for (std::size_t n : lengths) {
        for (const bool squares : {false, true}) {
            CAPTURE(n);
            CAPTURE(squares);
            xgrad::Tensor x = xgrad::Tensor::from_shape({std::max<std::size_t>(n, 1)});
            xgrad::Rng(n).fill_uniform(x, -1.f, 3.f);
            std::vector<float> terms(n);
            double exact = 0.0, magnitude = 0.0;
            for (std::size_t i = 0; i < n; ++i) {
                terms[i] = squares ? x(i) * x(i) : x(i);
                exact += terms[i];
                magnitude += std::abs(terms[i]);
            }
            const double sum = xgrad::lane_sum(n, [&](std::size_t i) { return squares ? x(i) * x(i) : x(i); });
            CHECK(sum == lane_sum_reference(terms));
            // A lane adds at most 64 + 7 terms, then three additions combine
            // the lanes: each float addition errs by at most 2^-24 of the
            // magnitude of what it adds.
            CHECK(std::abs(sum - exact) <= 75 * std::ldexp(1.0, -24) * magnitude);
        }
    }
}

}  // namespace
