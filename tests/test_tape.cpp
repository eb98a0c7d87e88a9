// Tape semantics: how gradients accumulate, when a graph is freed, and which
// misuses are refused loudly instead of yielding a wrong gradient. Every input
// is a small integer or half, so every expected gradient is exact in float.
#include <doctest/doctest.h>

#include <algorithm>
#include <stdexcept>
#include <string>

#include <xtensor/xio.hpp>

#include <xgrad/nn/module.hpp>
#include <xgrad/optim/optimizers.hpp>

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
    SUBCASE("an input that needs no gradient but whose value the backward uses") {
        x.mutable_value()(0, 1) = 7.f;
    }
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
    Var b(Tensor{{1, 1}}, true);
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
    CHECK(b.grad() == Tensor{{2, 2}});

    w.set_requires_grad(true);
    backward(sum(linear(x, w, b)));
    CHECK(w.grad() == Tensor{{3, 3}, {2, 2}});  // x^T . ones
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

TEST_CASE("backward needs a 1x1 root that requires a gradient") {
    Var w(Tensor{{1, 2}, {3, 4}}, true);
    CHECK_THROWS_WITH_AS(backward(w * w), Contains("(2, 2)"), ShapeError);
    CHECK_THROWS_AS(backward(sum(Var(Tensor{{1, 2}}))), std::logic_error);
    CHECK_THROWS_AS(backward(Var()), std::logic_error);
    CHECK(all_zero(w.grad()));

    Var scalar(Tensor{{5}}, true);
    backward(scalar);  // d scalar / d scalar = 1
    CHECK(scalar.grad()(0, 0) == 1.f);
}

TEST_CASE("a deep chain is walked and freed without recursion") {
    // Recursion over 200000 nodes would need far more than an 8 MiB stack.
    constexpr int kDepth = 200000;
    Var x(Tensor{{0}}, true);
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
    CHECK(x.grad()(0, 0) == 2.f);  // 1 from each walk
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

    const Var input(Tensor{{1}});
    CHECK_THROWS_AS(input.grad(), std::logic_error);  // a leaf that never required one
}
