// xgrad's threads (parallel.hpp): every block runs once, and products,
// elementwise ops and Adam give the same results on 1 and on several threads.
// Shapes are large enough to be split (the GAN's).
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <thread>
#include <vector>

#if defined(__SSE2__)
#include <xmmintrin.h>
#endif

#include <xtensor/xmath.hpp>

#include <xgrad/core/kernels.hpp>
#include <xgrad/core/op.hpp>
#include <xgrad/core/parallel.hpp>
#include <xgrad/core/random.hpp>
#include <xgrad/nn.hpp>
#include <xgrad/ops.hpp>
#include <xgrad/optim.hpp>

#include "helpers.hpp"

using namespace xgrad;

namespace {

// Runs the test body on `n` threads and returns to the default of 1.
class Threads {
public:
    explicit Threads(int n) { set_num_threads(n); }
    ~Threads() { set_num_threads(1); }
    Threads(const Threads&) = delete;
    Threads& operator=(const Threads&) = delete;
};

Tensor random_tensor(std::size_t rows, std::size_t cols, std::uint64_t seed) {
    return test::random_tensor({rows, cols}, -1.f, 1.f, seed);
}
Tensor random_tensor(const Shape& shape, std::uint64_t seed) { return test::random_tensor(shape, -1.f, 1.f, seed); }

// The largest |a - b| relative to max(1, |b|).
// OpenBLAS picks its kernels by a product's shape, so the same rows computed
// in a smaller product can round differently (1.4e-5 seen for K = 784 on an
// AMD EPYC with AVX-512): products are compared to this tolerance, far below
// what a wrongly split row range would give.
constexpr float kSplitTolerance = 1e-4f;

float max_relative_difference(const Tensor& a, const Tensor& b) {
    REQUIRE(a.shape() == b.shape());
    float worst = 0.f;
    for (std::size_t i = 0; i < a.size(); ++i) {
        worst = std::max(worst, std::abs(a.data()[i] - b.data()[i]) / std::max(1.f, std::abs(b.data()[i])));
    }
    return worst;
}

bool identical(const Tensor& a, const Tensor& b) { return a.shape() == b.shape() && std::equal(a.begin(), a.end(), b.begin()); }

}  // namespace

TEST_CASE("parallel_for runs every index exactly once, on any number of threads") {
    for (int threads : {1, 2, 3, 4}) {
        Threads use(threads);
        CHECK(num_threads() == threads);
        for (std::size_t n : {0, 1, 15, 16, 17, 100, 1000, 4099}) {
            for (std::size_t grain : {0, 1, 16, 500}) {
                std::vector<std::atomic<int>> runs(n);
                parallel_for(n, grain, [&](std::size_t begin, std::size_t end) {
                    CHECK(begin <= end);
                    for (std::size_t i = begin; i < end; ++i) ++runs[i];
                });
                int wrong = 0;
                for (const auto& r : runs) wrong += r != 1;
                INFO("threads " << threads << ", n " << n << ", grain " << grain);
                CHECK(wrong == 0);
            }
        }
    }
}

TEST_CASE("parallel_for inside parallel_for runs its blocks inline, on the outer block's thread") {
    Threads use(2);
    std::atomic<int> covered{0}, elsewhere{0};
    parallel_for(64, 1, [&](std::size_t, std::size_t) {
        const std::thread::id outer = std::this_thread::get_id();
        parallel_for(64, 1, [&](std::size_t begin, std::size_t end) {
            covered += static_cast<int>(end - begin);
            elsewhere += std::this_thread::get_id() != outer;
        });
    });
    CHECK(covered == 2 * 64);
    CHECK(elsewhere == 0);
}

TEST_CASE("the pool backs off briefly after a hiccup, for longer while workers stay late") {
    using std::chrono::milliseconds;
    using xgrad::detail::next_backoff;
    const milliseconds long_ago(1000000);
    // A first late job: the shortest backoff.
    CHECK(next_backoff(long_ago, milliseconds(100)) == milliseconds(1));
    CHECK(next_backoff(long_ago, milliseconds(1)) == milliseconds(1));
    // Late again soon after the previous backoff ended: twice as long each time, up to 100 ms.
    std::chrono::nanoseconds b = milliseconds(1);
    std::vector<long> seen;
    for (int k = 0; k < 9; ++k) {
        b = next_backoff(milliseconds(0), b);
        seen.push_back(long(std::chrono::duration_cast<milliseconds>(b).count()));
    }
    CHECK(seen == std::vector<long>{2, 4, 8, 16, 32, 64, 100, 100, 100});
    // "Soon" scales with the backoff: 9 ms after a 1 ms one is recurring, 10 ms is not.
    CHECK(next_backoff(milliseconds(9), milliseconds(1)) == milliseconds(2));
    CHECK(next_backoff(milliseconds(10), milliseconds(1)) == milliseconds(1));
    CHECK(next_backoff(milliseconds(999), milliseconds(100)) == milliseconds(100));
}

TEST_CASE("items_per_block groups items into blocks of about kBlockElements") {
    CHECK(items_per_block(0) == kBlockElements);
    CHECK(items_per_block(1) == kBlockElements);
    CHECK(items_per_block(196) == kBlockElements / 196);
    CHECK(items_per_block(kBlockElements) == 1);
    CHECK(items_per_block(3 * kBlockElements) == 1);
}

TEST_CASE("set_num_threads rejects fewer than one thread") {
    CHECK_THROWS_AS(set_num_threads(0), std::invalid_argument);
    CHECK(num_threads() == 1);
}

TEST_CASE("products split by rows equal the one-thread products, for every transpose and beta") {
    // (m, k, n) of the GAN's products, and one whose row count does not divide evenly.
    const std::size_t shapes[][3] = {{128, 784, 128}, {128, 128, 784}, {784, 128, 128}, {128, 100, 128}, {203, 77, 91}};
    std::uint64_t seed = 1;
    for (const auto& s : shapes) {
        const std::size_t m = s[0], k = s[1], n = s[2];
        for (bool ta : {false, true}) {
            for (bool tb : {false, true}) {
                for (float beta : {0.f, 1.f}) {
                    const Tensor a = ta ? random_tensor(k, m, ++seed) : random_tensor(m, k, ++seed);
                    const Tensor b = tb ? random_tensor(n, k, ++seed) : random_tensor(k, n, ++seed);
                    const Tensor c0 = random_tensor(m, n, ++seed);
                    Tensor serial = c0, split = c0;
                    gemm("test", as_matrix(a), ta, as_matrix(b), tb, as_matrix(serial), beta);
                    {
                        Threads use(3);
                        gemm("test", as_matrix(a), ta, as_matrix(b), tb, as_matrix(split), beta);
                    }
                    INFO("(" << m << ", " << k << ") . (" << k << ", " << n << "), transposes " << ta << tb << ", beta " << beta);
                    CHECK(max_relative_difference(split, serial) < kSplitTolerance);
                }
            }
        }
    }
}

TEST_CASE("outer products (k = 1) are each element's product, rounded once, for every transpose and beta") {
    // k = 1 with beta = 0 skips the BLAS (a loop writes each row once); with
    // beta = 1 the BLAS adds the product to c.
    const std::size_t m = 203, n = 91;
    std::uint64_t seed = 70;
    for (int threads : {1, 3}) {
        Threads use(threads);
        for (bool ta : {false, true}) {
            for (bool tb : {false, true}) {
                for (float beta : {0.f, 1.f}) {
                    const Tensor a = ta ? random_tensor(1, m, ++seed) : random_tensor(m, 1, ++seed);
                    const Tensor b = tb ? random_tensor(n, 1, ++seed) : random_tensor(1, n, ++seed);
                    const Tensor c0 = random_tensor(m, n, ++seed);
                    Tensor c = c0;
                    gemm("test", as_matrix(a), ta, as_matrix(b), tb, as_matrix(c), beta);
                    std::size_t wrong = 0;
                    for (std::size_t i = 0; i < m; ++i) {
                        for (std::size_t j = 0; j < n; ++j) {
                            const float product = float(double(a.data()[i]) * double(b.data()[j]));
                            const float expected = beta == 0.f ? product : c0(i, j) + product;
                            wrong += beta == 0.f ? c(i, j) != expected : std::abs(c(i, j) - expected) > 1e-6f;
                        }
                    }
                    INFO(threads << " threads, transposes " << ta << tb << ", beta " << beta);
                    CHECK(wrong == 0);
                }
            }
        }
    }
}

TEST_CASE("rank-3 and batched products, forward and backward, equal the one-thread ones") {
    // linear over (8, 32, 100) rows (one GEMM of 256 rows), matmul of a
    // rank-3 a with a matrix, and a batched matmul (a GEMM per batch).
    struct Run {
        Tensor y, dx, dw, db;
    };
    const auto run = [](int threads, int which) {
        Threads use(threads);
        Var x(random_tensor(which == 2 ? Shape{4, 96, 128} : Shape{8, 32, 100}, 21), true);
        Var w(random_tensor(which == 2 ? Shape{4, 128, 80} : which == 0 ? Shape{128, 100} : Shape{100, 128}, 22), true);
        Var b(random_tensor({128}, 23), true);
        const Var y = which == 0 ? linear(x, w, b) : matmul(x, w);
        const Var dy(random_tensor(y.shape(), 24));
        backward(sum(y * dy));
        return Run{y.value(), x.grad(), w.grad(), which == 0 ? b.grad() : Tensor()};
    };
    for (int which : {0, 1, 2}) {
        CAPTURE(which);
        const Run serial = run(1, which), split = run(3, which);
        CHECK(serial.y.dimension() == 3);
        CHECK(max_relative_difference(split.y, serial.y) < kSplitTolerance);
        CHECK(max_relative_difference(split.dx, serial.dx) < kSplitTolerance);
        CHECK(max_relative_difference(split.dw, serial.dw) < kSplitTolerance);
        if (which == 0) CHECK(max_relative_difference(split.db, serial.db) < kSplitTolerance);
    }
}

TEST_CASE("elementwise ops give the same values on several threads") {
    const Var x(random_tensor(128, 784, 7));
    const Var positive(xt::eval(xt::abs(x.value()) + 0.5f));
    const Tensor serial[] = {sigmoid(x).value(), xgrad::tanh(x).value(), xgrad::exp(x).value(), xgrad::log(positive).value()};
    const Var cube(random_tensor({16, 64, 98}, 8));
    const Tensor cube_serial = xgrad::tanh(cube).value(), cube_sigmoid = sigmoid(cube).value();
    Threads use(2);
    CHECK(identical(sigmoid(x).value(), serial[0]));
    CHECK(identical(xgrad::tanh(x).value(), serial[1]));
    CHECK(identical(xgrad::exp(x).value(), serial[2]));
    CHECK(identical(xgrad::log(positive).value(), serial[3]));

    // Any rank: the elements are split the same way.
    CHECK(num_threads() == 2);
    CHECK(identical(xgrad::tanh(cube).value(), cube_serial));
    CHECK(identical(sigmoid(cube).value(), cube_sigmoid));
    CHECK(cube_serial.shape() == Shape{16, 64, 98});
}

TEST_CASE("elementwise backward passes give the same gradients on several threads") {
    // ~100K elements, split into ranges that do not end at a multiple of the
    // kernels' 1024-float chunks. x feeds four ops, so three of them
    // add to a gradient the first one wrote.
    const auto gradient = [](int threads) {
        Threads use(threads);
        const Var x(random_tensor(127, 785, 9), true);
        xgrad::backward(xgrad::sum(xgrad::relu(x) + xgrad::leaky_relu(x, 0.2f) + sigmoid(x) + xgrad::tanh(x)));
        return Tensor(x.grad());
    };
    CHECK(identical(gradient(2), gradient(1)));
}

TEST_CASE("sums per channel (a bias's gradient) are the same on several threads") {
    // Large enough to be split over the channels: (N, C, H, W) -> (C, 1, 1)
    // and (C, H*W) -> (C, 1), storing and adding, against a double sum.
    const struct { Shape full, small; } cases[] = {{{4, 512, 8, 8}, {512, 1, 1}}, {{1024, 49}, {1024, 1}}};
    for (const auto& c : cases) {
        INFO("sum of " << shape_string(c.full) << " down to " << shape_string(c.small));
        const Tensor full = random_tensor(c.full, 21), start = random_tensor(c.small, 22);
        const auto summed = [&](int threads, bool accumulate) {
            Threads use(threads);
            Tensor out = start;
            sum_to("test", full, out, accumulate, 0.5f);
            return out;
        };
        for (const bool accumulate : {false, true}) {
            const Tensor serial = summed(1, accumulate);
            CHECK(identical(summed(2, accumulate), serial));
            const std::size_t channels = serial.size();
            const std::size_t inner = c.full.size() == 4 ? c.full[2] * c.full[3] : c.full[1];
            std::vector<double> want(channels, 0.0);
            for (std::size_t i = 0; i < full.size(); ++i) want[(i / inner) % channels] += 0.5 * full.data()[i];
            for (std::size_t j = 0; j < channels; ++j) {
                const double expected = want[j] + (accumulate ? start.data()[j] : 0.0);
                CHECK(serial.data()[j] == doctest::Approx(expected).epsilon(1e-5));
            }
        }
    }
}

TEST_CASE("Adam's update is the same on several threads") {
    // 200K elements: several blocks of Adam's update.
    auto train = [](int threads) {
        Threads use(threads);
        Var w(random_tensor(400, 500, 11), true);
        const Var c(random_tensor(400, 500, 12));
        Adam adam({w});
        for (int step = 0; step < 3; ++step) {
            adam.zero_grad();
            backward(sum(w * c * w));
            adam.step();
        }
        return w.value();
    };
    CHECK(identical(train(3), train(1)));
}

TEST_CASE("reshape's and flatten's copies are whole on several threads") {
    // 200K elements: several blocks of each copy, forward and backward,
    // storing (into the product's gradient) and adding (into x's).
    Threads use(3);
    Var x(random_tensor(400, 500, 31), true);
    const Tensor dy = random_tensor(200, 1000, 32);
    const Var y = reshape(x * 2.f, {200, 1000}) + reshape(flatten(reshape(x, {400, 5, 100})), {200, 1000});
    backward(y, dy);
    std::size_t wrong_values = 0, wrong_gradients = 0;
    for (std::size_t i = 0; i < x.numel(); ++i) {
        const float xi = x.value().data()[i], dyi = dy.data()[i];
        wrong_values += y.value().data()[i] != xi * 2.f + xi;
        wrong_gradients += x.grad().data()[i] != dyi * 2.f + dyi;
    }
    CHECK(wrong_values == 0);
    CHECK(wrong_gradients == 0);
}

TEST_CASE("linear's bias rows are whole on several threads") {
    // 64 rows of 5000: the rows that start as the bias come in several
    // blocks. The product adds each element's sum of 30 terms to its bias in
    // one rounding, so it equals the product on the same threads plus the
    // bias exactly. (Not across thread counts: the GEMM's row blocks follow
    // the thread count, and on some CPUs OpenBLAS sums a block's edge rows
    // in another order.)
    const Var x(random_tensor(64, 30, 51)), w(random_tensor(5000, 30, 52)), b(random_tensor(1, 5000, 53));
    for (const int threads : {1, 3}) {
        Threads use(threads);
        const Tensor with_bias = linear(x, w, reshape(b, {5000})).value();
        const Tensor product = matmul(x, transpose(w, 0, 1)).value();
        std::size_t wrong = 0;
        for (std::size_t r = 0; r < 64; ++r) {
            for (std::size_t o = 0; o < 5000; ++o) wrong += with_bias(r, o) != product(r, o) + b.value()(0, o);
        }
        CHECK_MESSAGE(wrong == 0, threads, " threads");
    }
}

TEST_CASE("zero_grad clears every element on several threads") {
    Threads use(3);
    Var w(random_tensor(400, 500, 41), true);
    backward(sum(w * w));
    w.zero_grad();
    CHECK(std::count(w.grad().begin(), w.grad().end(), 0.f) == std::ptrdiff_t(w.numel()));
}

TEST_CASE("EmaWeights' update is the same on several threads") {
    // 200K weights: several blocks of the update.
    auto average = [](int threads) {
        Threads use(threads);
        Rng rng(13);
        Linear layer(500, 400, rng), target(500, 400, rng);
        EmaWeights ema(layer, 0.9f);
        for (int step = 0; step < 3; ++step) {
            Var w = layer.weight;
            w.mutable_value() = random_tensor(400, 500, 20 + step);
            ema.update();
        }
        ema.copy_to(target);
        return target.weight.value();
    };
    CHECK(identical(average(3), average(1)));
}

#if defined(__SSE2__)
TEST_CASE("Adam flushes subnormal moments to zero and restores the caller's floating-point mode") {
    Var w(Tensor({1, 2}, 1.f), true);
    Adam adam({w});
    Archive state;
    adam.save(state, "");
    const float subnormal = std::numeric_limits<float>::denorm_min() * 1000.f;
    Tensor m({1, 2}, subnormal);
    state.put("m.0", m);
    adam.load(state, "");

    const unsigned csr = _mm_getcsr();
    adam.step();  // the gradient is 0: m = 0.9 m would stay subnormal
    CHECK(_mm_getcsr() == csr);
    Archive after;
    adam.save(after, "");
    CHECK(after.tensor("m.0")(0, 0) == 0.f);
    CHECK(after.tensor("m.0")(0, 1) == 0.f);
}
#endif
