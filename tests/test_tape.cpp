// Tape semantics: how gradients accumulate, when a graph is freed, and which
// misuses are refused loudly instead of yielding a wrong gradient. Every input
// is a small integer or half, so every expected gradient is exact in float.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <xtensor/xio.hpp>

#include <xgrad/core/op.hpp>
#include <xgrad/nn.hpp>
#include <xgrad/ops.hpp>
#include <xgrad/optim.hpp>

#include "helpers.hpp"

using namespace xgrad;
using doctest::Contains;

namespace {

bool all_zero(const Tensor& t) {
    return std::all_of(t.begin(), t.end(), [](float v) { return v == 0.f; });
}

}  // namespace

TEST_CASE("a value used twice receives the sum of both gradients") {
    Var x(Tensor{{1, -2, 3}}, true);
    SUBCASE("a leaf") {
        backward(sum(x * x + x));  // d/dx = 2x + 1
        CHECK(x.grad() == Tensor{{3, -3, 7}});
    }
    SUBCASE("an op result") {
        // h feeds three uses: its gradient must be complete before h's own
        // backward passes it on to x.
        const Var h = 3.f * x;
        backward(sum(h * h + h));  // d/dx = 3 (2h + 1) = 18x + 3
        CHECK(x.grad() == Tensor{{21, -33, 57}});
    }
}

TEST_CASE("gradients accumulate across backward calls until zero_grad") {
    Var w(Tensor{{1, 2}}, true);
    const Var a(Tensor{{3, 4}});
    const Var b(Tensor{{5, -6}});
    backward(sum(w * a));
    CHECK(w.grad() == a.value());
    backward(sum(w * b));
    CHECK(w.grad() == Tensor{{8, -2}});
    w.zero_grad();
    CHECK(all_zero(w.grad()));
    backward(sum(w * b));
    CHECK(w.grad() == b.value());
}

TEST_CASE("a second backward through the same graph needs retain_graph") {
    Var w(Tensor{{2, -1}}, true);
    const Var loss = sum(w * w);  // d/dw = 2w
    SUBCASE("without it the graph is freed") {
        backward(loss);
        CHECK_THROWS_WITH_AS(backward(loss), Contains("retain_graph"), std::logic_error);
        CHECK(w.grad() == Tensor{{4, -2}});  // the refused call added nothing
    }
    SUBCASE("with it the graph can be walked again") {
        BackwardOptions keep;
        keep.retain_graph = true;
        backward(loss, keep);
        backward(loss);
        CHECK(w.grad() == Tensor{{8, -4}});
        // The second call did not retain: the graph is gone now.
        CHECK_THROWS_AS(backward(loss), std::logic_error);
    }
}

TEST_CASE("a graph built on part of an already backwarded graph is refused") {
    Var x(Tensor{{1, 2}}, true);
    const Var h = x * x;
    backward(sum(h));
    const Var reuse = sum(h * 2.f);
    CHECK_THROWS_WITH_AS(backward(reuse), Contains("'mul'"), std::logic_error);
    CHECK(x.grad() == Tensor{{2, 4}});
}

TEST_CASE("NoGrad records no graph, nests, and restores grad mode") {
    Var w(Tensor{{1, 2}}, true);
    CHECK(grad_enabled());
    Var doubled;
    {
        NoGrad outer;
        CHECK_FALSE(grad_enabled());
        {
            NoGrad inner;
            CHECK_FALSE(grad_enabled());
        }
        CHECK_FALSE(grad_enabled());  // leaving the inner scope must not re-enable
        const Var loss = sum(w * w);
        CHECK_FALSE(loss.requires_grad());
        CHECK(loss.item() == 5.f);
        CHECK_THROWS_AS(backward(loss), std::logic_error);
        doubled = w * 2.f;
    }
    CHECK(grad_enabled());
    CHECK(sum(w * w).requires_grad());
    // A value computed under NoGrad is a constant to later graphs.
    backward(sum(w * doubled));
    CHECK(w.grad() == Tensor{{2, 4}});
}

TEST_CASE("detach copies the value and cuts the history") {
    Var x(Tensor{{1, 2, 3}}, true);
    const Var h = x * x;
    Var d = h.detach();
    CHECK(d.value() == h.value());
    CHECK(d.is_leaf());
    CHECK_FALSE(d.requires_grad());
    backward(sum(x * d));  // d counts as a constant: d/dx = d = x^2, not 3x^2
    CHECK(x.grad() == Tensor{{1, 4, 9}});
    d.mutable_value()(0, 0) = 100.f;
    CHECK(h.value()(0, 0) == 1.f);  // a copy, not a view
}

TEST_CASE("backward refuses a graph whose inputs were modified after the forward pass") {
    Var w(Tensor{{1, 2}}, true);
    Var x(Tensor{{3, 4}});
    const Var loss = sum(w * x);
    SUBCASE("a parameter, through mutable_value()") {
        const auto before = w.version();
        w.mutable_value()(0, 0) = 5.f;
        CHECK(w.version() == before + 1);
    }
    SUBCASE("a parameter, by an optimizer step") {
        backward(sum(w * x));
        SGD optimizer({w}, 0.5f);
        optimizer.step();
        w.zero_grad();
    }
    SUBCASE("an input that needs no gradient but whose value the backward uses") { x.mutable_value()(0, 1) = 7.f; }
    CHECK_THROWS_WITH_AS(backward(loss), Contains("'mul'"), std::logic_error);
    CHECK_THROWS_WITH_AS(backward(loss), Contains("modified"), std::logic_error);
    CHECK(all_zero(w.grad()));
    // A forward pass over the new values is fine.
    backward(sum(w * x));
    CHECK(w.grad() == x.value());
}

TEST_CASE("graphs built over shared parameters backward independently") {
    Var w(Tensor{{1, -2}}, true);
    const Var a(Tensor{{3, 5}});
    const Var b(Tensor{{2, 4}});
    // Both graphs exist before either backward, as the two losses of a GAN step do.
    const Var first = sum(w * a);
    const Var second = sum(w * w * b);  // d/dw = 2wb
    backward(first);
    CHECK(w.grad() == a.value());
    backward(second);
    CHECK(w.grad() == Tensor{{3 + 4, 5 - 16}});
}

TEST_CASE("a GAN step: D's backward leaves G alone, G's backward flows through a frozen D") {
    Var g_w(Tensor{{1, 2}}, true);   // the generator
    Var d_w(Tensor{{3, -1}}, true);  // the discriminator
    const Var z(Tensor{{2, -1}});
    const Var real(Tensor{{4, 5}});
    const Var fake = z * g_w;  // (2, -2)

    // D step on a detached fake: no gradient may reach G (and G's graph survives).
    backward(sum(fake.detach() * d_w) + sum(real * d_w));
    CHECK(d_w.grad() == Tensor{{2 + 4, -2 + 5}});
    CHECK(all_zero(g_w.grad()));

    // G step through the same fake with D frozen: only G gets a gradient.
    d_w.set_requires_grad(false);
    backward(sum(fake * d_w));
    CHECK(g_w.grad() == Tensor{{2 * 3, -1 * -1}});
    CHECK(d_w.grad() == Tensor{{6, 3}});
}

TEST_CASE("frozen parameters receive no gradient") {
    Var w(Tensor{{1, 2}, {3, 4}}, true);
    Var b(Tensor{1, 1}, true);  // a bias is rank 1: (O)
    const Var x(Tensor{{1, -1}, {2, 3}});
    SUBCASE("frozen before the forward pass") {
        w.set_requires_grad(false);
        backward(sum(linear(x, w, b)));
    }
    SUBCASE("frozen between forward and backward") {
        const Var loss = sum(linear(x, w, b));
        w.set_requires_grad(false);
        backward(loss);
    }
    CHECK_FALSE(w.requires_grad());
    CHECK(all_zero(w.grad()));
    CHECK(b.grad() == Tensor{2, 2});

    w.set_requires_grad(true);
    backward(sum(linear(x, w, b)));
    CHECK(w.grad() == Tensor{{3, 2}, {3, 2}});  // ones^T . x
}

TEST_CASE("set_requires_grad over a parameter list, and Module::freeze / unfreeze") {
    Rng rng(7);
    Sequential net;
    auto& first = net.add<Linear>(3, 4, rng);
    net.add<Tanh>();
    auto& last = net.add<Linear>(4, 2, rng);
    const Var x(Tensor{{1, 2, 3}, {-1, 0, 2}});

    SUBCASE("xgrad::set_requires_grad") {
        set_requires_grad(net.parameters(), false);
        for (const Var& p : net.parameters()) CHECK_FALSE(p.requires_grad());
        CHECK_THROWS_AS(backward(sum(net(x))), std::logic_error);
        set_requires_grad(net.parameters(), true);
        for (const Var& p : net.parameters()) CHECK(p.requires_grad());
    }
    SUBCASE("freezing the last layer: the gradient still flows through it") {
        net[2].freeze();
        CHECK_FALSE(last.weight.requires_grad());
        CHECK_FALSE(last.bias.requires_grad());
        CHECK(first.weight.requires_grad());
        backward(sum(net(x)));
        CHECK(all_zero(last.weight.grad()));
        CHECK(all_zero(last.bias.grad()));
        CHECK_FALSE(all_zero(first.weight.grad()));
        CHECK_FALSE(all_zero(first.bias.grad()));

        net[2].unfreeze();
        backward(sum(net(x)));
        CHECK_FALSE(all_zero(last.weight.grad()));
        CHECK_FALSE(all_zero(last.bias.grad()));
    }
}

TEST_CASE("backward needs a one-element root that requires a gradient") {
    Var w(Tensor{{1, 2}, {3, 4}}, true);
    CHECK_THROWS_WITH_AS(backward(w * w), Contains("(2, 2)"), ShapeError);
    CHECK_THROWS_AS(backward(sum(Var(Tensor{{1, 2}}))), std::logic_error);
    CHECK_THROWS_AS(backward(Var()), std::logic_error);
    CHECK(all_zero(w.grad()));

    // A reduction to a scalar is rank 0 now, and is a valid root.
    const Var total = sum(w * w);
    CHECK(total.shape() == Shape{});
    backward(total);
    CHECK(w.grad() == Tensor{{2, 4}, {6, 8}});
    // So is any other one-element shape, a kept-dimension sum among them.
    w.zero_grad();
    const Var kept = sum(w, {0, 1}, true);
    CHECK(kept.shape() == Shape{1, 1});
    backward(kept);
    CHECK(w.grad() == Tensor{{1, 1}, {1, 1}});

    for (const Shape& shape : {Shape{}, Shape{1}, Shape{1, 1}, Shape{1, 1, 1}}) {
        CAPTURE(shape_string(shape));
        Var leaf = Var::full(shape, 5.f, true);
        backward(leaf);  // d leaf / d leaf = 1
        CHECK(leaf.grad().shape() == shape);
        CHECK(leaf.grad().size() == 1);
        CHECK(*leaf.grad().data() == 1.f);
    }
}

TEST_CASE("backward(y, dy) for a non-scalar y is the backward of sum(y * dy)") {
    // y = 3 x^2 + x: dx = dy (6x + 1).
    const auto f = [](const Var& x) { return 3.f * x * x + x; };
    std::uint64_t seed = 1;
    for (const Shape& shape : {Shape{3}, Shape{2, 3}, Shape{2, 3, 2}, Shape{1, 2, 1, 3}}) {
        CAPTURE(shape_string(shape));
        Tensor values = Tensor::from_shape(shape), dy = Tensor::from_shape(shape);
        for (std::size_t i = 0; i < values.size(); ++i) {
            values.flat(i) = 0.5f * static_cast<float>(static_cast<int>(i % 7) - 3);
            dy.flat(i) = static_cast<float>(static_cast<int>((i * 5 + seed) % 9) - 4);
        }
        ++seed;
        Var x(values, true);
        backward(f(x), dy);
        const Tensor seeded = x.grad();
        x.zero_grad();
        backward(sum(f(x) * Var(dy)));
        CHECK(seeded == x.grad());
        CHECK(seeded == Tensor(dy * (6.f * values + 1.f)));
        CHECK(seeded.shape() == shape);
    }

    Var x(Tensor{{1, 2, 3}, {4, 5, 6}}, true);
    SUBCASE("a gradient of another shape is refused, naming both, and adds nothing") {
        const Var y = x * x;
        CHECK_THROWS_WITH_AS(backward(y, Tensor(Shape{3, 2}, 1.f)), Contains("(3, 2)"), ShapeError);
        CHECK_THROWS_WITH_AS(backward(y, Tensor(Shape{3, 2}, 1.f)), Contains("(2, 3)"), ShapeError);
        CHECK_THROWS_AS(backward(y, Tensor(Shape{6}, 1.f)), ShapeError);  // same size, other shape
        CHECK_THROWS_AS(backward(y, Tensor(Shape{1, 2, 3}, 1.f)), ShapeError);
        CHECK(all_zero(x.grad()));
        backward(y, Tensor(Shape{2, 3}, 1.f));  // the graph survived the refusals
        CHECK(x.grad() == Tensor{{2, 4, 6}, {8, 10, 12}});
    }
    SUBCASE("a leaf root adds the given gradient") {
        const Tensor dy{{1, -1, 2}, {0, 3, -2}};
        backward(x, dy);
        backward(x, dy);
        CHECK(x.grad() == Tensor(2.f * dy));
    }
    SUBCASE("a one-element root takes a gradient other than 1") {
        backward(sum(x), Tensor(Shape{}, -2.f));
        CHECK(x.grad() == Tensor(Shape{2, 3}, -2.f));
    }
}

TEST_CASE("rank-0 and rank-3 values go through the tape") {
    SUBCASE("scalars throughout") {
        Var s = Var::scalar(3.f, true);
        const Var y = s * s + s;  // dy/ds = 2s + 1
        CHECK(s.dim() == 0);
        CHECK(y.dim() == 0);
        CHECK(y.shape() == Shape{});
        CHECK(y.numel() == 1);
        CHECK(y.item() == 12.f);
        backward(y);
        CHECK(s.grad().dimension() == 0);
        CHECK(s.grad()() == 7.f);
        CHECK(sum(s).shape() == Shape{});
    }
    SUBCASE("a scalar parameter on a recycled node gets a zeroed gradient buffer") {
        // Regression: a recycled node's released gradient has shape () too,
        // so a rank-0 leaf took it for its buffer and backward wrote past it.
        for (int round = 0; round < 3; ++round) {
            CAPTURE(round);
            {
                Var gone = Var::scalar(1.f, true);
                backward(gone * 2.f);
            }
            Var s = Var::scalar(3.f, true);
            REQUIRE(s.grad().size() == 1);
            CHECK(s.grad()() == 0.f);
            backward(s * s);
            CHECK(s.grad()() == 6.f);
            const Var constant = Var::scalar(2.f);  // never required a gradient: none to read
            CHECK_THROWS_AS(constant.grad(), std::logic_error);
        }
    }
    Tensor v = Tensor::from_shape({2, 3, 4});
    for (std::size_t i = 0; i < v.size(); ++i) v.flat(i) = 0.5f * (static_cast<float>(i) - 12.f);
    Var x(v, true);
    SUBCASE("a rank-3 value times a scalar parameter") {
        Var s = Var::scalar(2.f, true);
        const Var y = x * s + x * x;  // dx = s + 2x, ds = sum(x)
        CHECK(y.shape() == Shape{2, 3, 4});
        backward(sum(y));
        CHECK(x.grad().shape() == Shape{2, 3, 4});
        CHECK(x.grad() == Tensor(2.f + 2.f * v));
        CHECK(s.grad().shape() == Shape{});
        CHECK(s.grad()() == -6.f);  // 0.5 * sum(i - 12) over i < 24
    }
    SUBCASE("reductions over some axes of a rank-3 value") {
        const Var over_0_2 = sum(x, {0, 2});
        CHECK(over_0_2.shape() == Shape{3});
        CHECK(sum(x, {0, 2}, true).shape() == Shape{1, 3, 1});
        CHECK(mean(x, {-2}).shape() == Shape{2, 4});
        const Var w(Tensor{1, -2, 3});
        backward(sum(over_0_2 * w));  // dx[i, j, k] = w[j]
        for (std::size_t i = 0; i < 2; ++i)
            for (std::size_t j = 0; j < 3; ++j)
                for (std::size_t k = 0; k < 4; ++k) CHECK(x.grad()(i, j, k) == w.value()(j));
        x.zero_grad();
        backward(sum(mean(x, {1}, true) * 3.f));  // 3 / 3 = 1 everywhere
        CHECK(x.grad() == Tensor(Shape{2, 3, 4}, 1.f));
    }
    SUBCASE("a rank-3 input through a linear layer") {
        Var w(Tensor{{1, 0, 1, 2}, {0, 1, 1, -1}}, true);  // (2, 4): (out, in)
        Var b(Tensor{0.5f, -0.5f}, true);
        const Var y = linear(x, w, b);
        CHECK(y.shape() == Shape{2, 3, 2});
        backward(sum(y));
        CHECK(b.grad() == Tensor{6, 6});  // one per row: the 2 x 3 leading positions
        const float w_row_sums[] = {1, 1, 2, 1};
        for (std::size_t r = 0; r < 6; ++r)
            for (std::size_t k = 0; k < 4; ++k) CHECK(x.grad().flat(r * 4 + k) == w_row_sums[k]);  // dy . w
        for (std::size_t k = 0; k < 4; ++k) {
            float column = 0.f;  // dy^T . x: input feature k summed over the 6 rows
            for (std::size_t r = 0; r < 6; ++r) column += v.flat(r * 4 + k);
            CHECK(w.grad()(0, k) == column);
            CHECK(w.grad()(1, k) == column);
        }
    }
}

TEST_CASE("a deep chain is walked and freed without recursion") {
    // Recursion over 200000 nodes would need far more than an 8 MiB stack.
    constexpr int kDepth = 200000;
    Var x = Var::scalar(0.f, true);
    // Builds the chain, walks it or not, and drops it: freed by backward()
    // in the first case, by the last handle's destructor in the second.
    const auto run = [&](bool walk) {
        Var y = x;
        for (int i = 0; i < kDepth; ++i) y = y + 1.f;
        CHECK(y.item() == static_cast<float>(kDepth));
        if (walk) backward(y);
    };
    for (const bool walk : {true, false}) {
        CAPTURE(walk);
        run(walk);
        const std::size_t pooled = tensor_pool().cached_buffers();
        run(walk);
        CHECK(tensor_pool().cached_buffers() == pooled);  // every node gave its buffers back
    }
    CHECK(x.grad()() == 2.f);  // 1 from each walk
}

TEST_CASE("a repeated training step recycles its buffers") {
    Rng rng(3);
    Sequential net;
    net.add<Linear>(6, 16, rng);
    net.add<ReLU>();
    net.add<Linear>(16, 1, rng);
    Adam optimizer(net.parameters(), AdamOptions{});
    Tensor batch = Tensor::from_shape({32, 6});
    rng.fill_uniform(batch, -1.f, 1.f);
    const Var x(batch);

    std::size_t during_forward = 0;
    const auto step = [&] {
        const Var loss = bce_with_logits(net(x), 1.f);
        during_forward = tensor_pool().cached_buffers();
        optimizer.zero_grad();
        backward(loss);
        optimizer.step();
    };
    step();  // warm-up: fills the pool
    const std::size_t settled = tensor_pool().cached_buffers();
    for (int i = 0; i < 5; ++i) {
        step();
        CHECK(tensor_pool().cached_buffers() == settled);
    }
    // Stable because the forward pass draws its buffers from the pool and
    // everything returns, not because nothing ever reaches the pool.
    CHECK(during_forward < settled);
}

TEST_CASE("wrapping a fresh tensor every step does not grow the pool") {
    Var w(Tensor({6, 1}, 0.5f), true);
    std::size_t settled = 0;
    for (int i = 0; i < 6; ++i) {
        const Var x(Tensor({32, 6}, float(i)));  // a new user batch each step
        backward(sum(matmul(x, w)));
        if (i == 1) settled = tensor_pool().cached_buffers();
        if (i > 1) CHECK(tensor_pool().cached_buffers() == settled);
    }
}

TEST_CASE("a backward refused for a modified input adds no gradient anywhere") {
    Var w(Tensor{{1, 2}}, true), v(Tensor{{3, 4}}, true);
    const Var x(Tensor{{5, 6}});
    const Var loss = sum(w * x) + sum(v * v);
    w.mutable_value()(0, 0) = 9.f;
    CHECK_THROWS_AS(backward(loss), std::logic_error);
    CHECK(all_zero(v.grad()));
    CHECK(all_zero(w.grad()));
}

TEST_CASE("leaf-only operations refuse op results") {
    Var w(Tensor{{1, 2}}, true);
    Var y = w * w;
    CHECK_FALSE(y.is_leaf());
    CHECK(std::string(y.op_name()) == "mul");
    CHECK_THROWS_WITH_AS(y.grad(), Contains("'mul'"), std::logic_error);
    CHECK_THROWS_WITH_AS(y.mutable_value(), Contains("'mul'"), std::logic_error);
    CHECK_THROWS_WITH_AS(y.set_requires_grad(false), Contains("'mul'"), std::logic_error);
    CHECK_THROWS_WITH_AS(y.zero_grad(), Contains("'mul'"), std::logic_error);
    CHECK(y.requires_grad());  // the refused call changed nothing

    const Var input = Var::scalar(1.f);
    CHECK_THROWS_AS(input.grad(), std::logic_error);  // a leaf that never required one
}

TEST_CASE("FreezeGuard freezes a parameter list and restores each parameter's previous setting") {
    Var a(Tensor{1, 2}, true), b(test::matrix({{3}, {4}}), true), c(Tensor{5, 6}, true);
    c.set_requires_grad(false);     // already frozen before the guard
    Var free(Tensor{1, -1}, true);  // not in the list
    const std::vector<Var> list{a, b, c};
    const auto loss = [&] { return sum(a * free) + sum(b * 2.f) + sum(c * free); };

    {
        FreezeGuard guard(list);
        CHECK_FALSE(a.requires_grad());
        CHECK_FALSE(b.requires_grad());
        CHECK_FALSE(c.requires_grad());
        CHECK(free.requires_grad());
        backward(loss());
        CHECK(all_zero(a.grad()));
        CHECK(all_zero(b.grad()));
        CHECK(free.grad() == Tensor{6, 8});  // a + c
        {
            // Nested: the inner guard finds a frozen and leaves it frozen.
            const std::vector<Var> inner_list{a, free};
            FreezeGuard inner(inner_list);
            CHECK_FALSE(free.requires_grad());
        }
        CHECK_FALSE(a.requires_grad());
        CHECK(free.requires_grad());
    }
    CHECK(a.requires_grad());
    CHECK(b.requires_grad());
    CHECK_FALSE(c.requires_grad());  // its own setting, not "requires"
    free.zero_grad();
    backward(loss());
    CHECK(a.grad() == Tensor{1, -1});
    CHECK(b.grad() == Tensor(Shape{2, 1}, 2.f));
    CHECK(all_zero(c.grad()));

    SUBCASE("also when an exception leaves its scope") {
        try {
            FreezeGuard guard(list);
            throw std::runtime_error("test: leaving the scope");
        } catch (const std::runtime_error&) {
        }
        CHECK(a.requires_grad());
        CHECK(b.requires_grad());
        CHECK_FALSE(c.requires_grad());
    }
    SUBCASE("a parameter unfrozen inside the guard is frozen again if it was") {
        {
            FreezeGuard guard(list);
            c.set_requires_grad(true);
        }
        CHECK_FALSE(c.requires_grad());
        CHECK(a.requires_grad());
    }
}

namespace {

// Vars that a helper thread creates, keeps and finally destroys itself,
// shown to the main thread by address only: copying or destroying them
// here would abort, so the main thread only calls entry points that throw.
class ForeignVars {
public:
    ForeignVars() : owner_([this] { run(); }) {
        std::unique_lock<std::mutex> lock(mutex_);
        changed_.wait(lock, [this] { return leaf_ != nullptr; });
    }
    // Lets the helper thread finish (it checks its Vars, then destroys them) and joins it.
    ~ForeignVars() { finish(); }
    void finish() {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            done_ = true;
        }
        changed_.notify_all();
        if (owner_.joinable()) owner_.join();
    }
    Var& leaf() { return *leaf_; }
    Var& result() { return *result_; }
    const std::vector<Var>& inputs() { return *inputs_; }
    // Set by the helper thread after finish(): its own backward worked on the untouched graph.
    Tensor grad_after;
    std::uint64_t version_after = 0;

private:
    void run() {
        auto leaf = std::make_unique<Var>(Tensor{1, 2}, true);
        auto result = std::make_unique<Var>(sum(*leaf * *leaf));
        auto inputs = std::make_unique<std::vector<Var>>(std::vector<Var>{*leaf});
        {
            std::lock_guard<std::mutex> lock(mutex_);
            result_ = result.get();
            inputs_ = inputs.get();
            leaf_ = leaf.get();
        }
        changed_.notify_all();
        {
            std::unique_lock<std::mutex> lock(mutex_);
            changed_.wait(lock, [this] { return done_; });
        }
        backward(*result);
        grad_after = leaf->grad();
        version_after = leaf->version();
    }  // the Vars die here, on their own thread

    std::mutex mutex_;
    std::condition_variable changed_;
    bool done_ = false;
    Var* leaf_ = nullptr;
    Var* result_ = nullptr;
    std::vector<Var>* inputs_ = nullptr;
    std::thread owner_;  // last: started once the members above exist
};

}  // namespace

TEST_CASE("Op, backward and mutable_value refuse a Var of another thread") {
    ForeignVars foreign;
    const std::uint64_t version = foreign.leaf().version();
    CHECK_THROWS_WITH_AS(backward(foreign.result()), Contains("thread"), std::logic_error);
    CHECK_THROWS_WITH_AS(backward(foreign.result(), Tensor(Shape{}, 1.f)), Contains("thread"), std::logic_error);
    CHECK_THROWS_WITH_AS(foreign.leaf().mutable_value(), Contains("thread"), std::logic_error);
    CHECK(foreign.leaf().version() == version);  // the refused call did not mark the value changed
    // Op's vector form reads its inputs without copying them (the braced
    // form copies each into an initializer_list first).
    CHECK_THROWS_WITH_AS(Op("probe", foreign.inputs(), Shape{2}), Contains("thread"), std::logic_error);
    CHECK_THROWS_WITH_AS(Op("probe", foreign.inputs(), Shape{2}), Contains("'probe'"), std::logic_error);
    // This thread's own graphs are unaffected.
    Var mine(Tensor{3, 4}, true);
    backward(sum(mine * mine));
    CHECK(mine.grad() == Tensor{6, 8});

    foreign.finish();
    CHECK(foreign.grad_after == Tensor{2, 4});  // the owner's backward: nothing was recorded or freed by the refusals
    CHECK(foreign.version_after == version);
}

namespace {

// y = x * x, computed through a buffer from save_or_scratch that holds 2 x
// (the derivative) for the kernel rule.
Var square_via_saved_derivative(const Var& x) {
    Op op("square_via_saved", {x}, x.shape());
    Tensor& derivative = op.save_or_scratch(x.shape());
    xt::noalias(derivative) = 2.f * x.value();
    xt::noalias(op.out()) = 0.5f * derivative * x.value();
    return op.finish([](BackwardContext& ctx) { ctx.accumulate(0, ctx.grad_output() * ctx.saved()); });
}

// The identity, whose kernel rule notes how many buffers the pool holds
// when it runs.
std::size_t pooled_when_probed = 0;
Var pool_probe(const Var& x) {
    Op op("pool_probe", {x}, x.shape());
    xt::noalias(op.out()) = x.value();
    return op.finish([](BackwardContext& ctx) {
        pooled_when_probed = tensor_pool().cached_buffers();
        ctx.accumulate(0, ctx.grad_output());
    });
}

}  // namespace

TEST_CASE("backward holds an op's gradient only from its first contribution until its rule has run") {
    // A chain of 8 ops after the probe: their rules all run before the
    // probe's. Holding every gradient for the whole pass would keep 10
    // buffers out of the pool there (the 8 tanh's, the sum's and the
    // probe's); handing each back once spent, one (the probe's own gradient,
    // which it is reading).
    const Var x(Tensor({777}, 0.5f), true);
    const auto pass = [&] {
        Var y = pool_probe(x);
        for (int k = 0; k < 8; ++k) y = tanh(y);
        const Var loss = sum(y);
        const std::size_t after_forward = tensor_pool().cached_buffers();
        backward(loss);
        return after_forward - pooled_when_probed;
    };
    pass();  // the pool now holds what a pass needs
    CHECK(pass() == 1);
    // The gradient is still d/dx of tanh applied 8 times, by the chain rule
    // (twice: the two passes add up).
    float value = 0.5f, derivative = 1.f;
    for (int k = 0; k < 8; ++k) {
        value = std::tanh(value);
        derivative *= 1.f - value * value;
    }
    CHECK(x.grad()(0) == doctest::Approx(2.f * derivative).epsilon(1e-5));
}

TEST_CASE("Op::save_or_scratch keeps its tensor for backward, or lends a pooled one") {
    const Var x(Tensor({3}, 3.f), true);
    SUBCASE("recording: backward reads what forward wrote") {
        backward(sum(square_via_saved_derivative(x)));
        CHECK(x.grad()(0) == 6.f);
    }
    SUBCASE("not recording: the buffer goes back to the pool when the op ends") {
        const NoGrad no_grad;
        const Var warm = square_via_saved_derivative(x);  // the pool now holds what the op needs
        const std::size_t cached = tensor_pool().cached_buffers();
        const Var y = square_via_saved_derivative(x);
        CHECK(y.value()(1) == 9.f);
        CHECK(tensor_pool().cached_buffers() == cached - 1);  // y's output; the scratch came back
    }
    SUBCASE("a second call is refused, recording or not") {
        const auto twice = [&] {
            Op op("twice", {x}, x.shape());
            op.save_or_scratch(x.shape());
            op.save_or_scratch(x.shape());
        };
        CHECK_THROWS_WITH(twice(), Contains("'twice' called save_or_scratch() twice"));
        const NoGrad no_grad;
        CHECK_THROWS_WITH(twice(), Contains("'twice' called save_or_scratch() twice"));
    }
}
