#include <xgrad/ops/linalg.hpp>

#include <algorithm>
#include <string>

#include <xgrad/core/op.hpp>
#include <xgrad/core/parallel.hpp>
#include <xgrad/ops/arithmetic.hpp>
#include <xgrad/ops/shape.hpp>

namespace xgrad {
namespace {

[[noreturn]] void mismatch(const Var& a, const Var& b, const char* why) {
    throw ShapeError(std::string("xgrad::matmul: ") + why + ": " + shape_string(a.shape()) + " . " + shape_string(b.shape()));
}

// A batched product: batch k multiplies a's matrix k (or a's only matrix)
// by b's matrix k.
struct Batches {
    std::size_t count, m, k, n;
    bool shared_a;  // a is one matrix used by every batch
};

Var batched_matmul(const Var& a, const Var& b) {
    const Shape &sa = a.shape(), &sb = b.shape();
    const std::size_t ra = sa.size(), rb = sb.size();
    if (sa[ra - 1] != sb[rb - 2]) mismatch(a, b, "inner dimensions differ");
    const bool shared_a = ra == 2;
    if (!shared_a && (ra != rb || !std::equal(sa.begin(), sa.end() - 2, sb.begin()))) {
        mismatch(a, b, "batch dimensions differ (they must be equal, or a must be a matrix)");
    }
    Shape out = sb;
    out[rb - 2] = sa[ra - 2];
    const Batches g{numel(Shape(sb.begin(), sb.end() - 2)), sa[ra - 2], sa[ra - 1], sb[rb - 1], shared_a};
    Op op("matmul", {a, b}, out);
    const auto matrix = [](const Tensor& t, std::size_t index, std::size_t rows, std::size_t cols) {
        return ConstMatrix{t.data() + index * rows * cols, rows, cols};
    };
    for (std::size_t i = 0; i < g.count; ++i) {
        gemm("matmul", matrix(a.value(), g.shared_a ? 0 : i, g.m, g.k), false, matrix(b.value(), i, g.k, g.n), false,
             Matrix{op.out().data() + i * g.m * g.n, g.m, g.n});
    }
    op.state<Batches>(g);
    return op.finish(
        [](BackwardContext& ctx) {
            const Batches& g = ctx.state<Batches>();
            const Tensor &a = ctx.input(0), &b = ctx.input(1), &dy = ctx.grad_output();
            if (dy.size() == 0 || g.k == 0) return;  // nothing to add (over k = 0, both gradients are empty)
            const auto at = [](const Tensor& t, std::size_t index, std::size_t rows, std::size_t cols) {
                return ConstMatrix{t.data() + index * rows * cols, rows, cols};
            };
            // Per batch: da_i = dy_i . b_i^T, db_i = a_i^T . dy_i; a shared a sums its batches.
            if (ctx.needs_grad(0)) {
                float* da = ctx.accumulator(0).data();
                for (std::size_t i = 0; i < g.count; ++i) {
                    gemm("matmul", at(dy, i, g.m, g.n), false, at(b, i, g.k, g.n), true,
                         Matrix{da + (g.shared_a ? 0 : i * g.m * g.k), g.m, g.k}, 1.f);
                }
            }
            if (ctx.needs_grad(1)) {
                float* db = ctx.accumulator(1).data();
                for (std::size_t i = 0; i < g.count; ++i) {
                    gemm("matmul", at(a, g.shared_a ? 0 : i, g.m, g.k), true, at(dy, i, g.m, g.n), false,
                         Matrix{db + i * g.k * g.n, g.k, g.n}, 1.f);
                }
            }
        },
        [](GraphContext& g) {
            const Var a = g.input(0), b = g.input(1);
            const Var& dy = g.grad_output();
            // A shared a's gradient (m, k) is summed down from (..., m, k) by accumulate.
            if (g.needs_grad(0)) g.accumulate(0, matmul(dy, transpose(b)));
            if (g.needs_grad(1)) g.accumulate(1, matmul(transpose(a), dy));
        });
}

}  // namespace

Var matmul(const Var& a, const Var& b) {
    const std::size_t ra = a.dim(), rb = b.dim();
    if (ra == 0 || rb == 0) mismatch(a, b, "scalars cannot be multiplied as matrices");
    if (rb >= 3) {
        if (ra < 2) mismatch(a, b, "a batched b needs a matrix or a batch of matrices as a");
        return batched_matmul(a, b);
    }
    // b is a matrix (K, N) or a vector (K): every row of a (all its leading
    // dimensions together) times b, in one GEMM (GEMV for a vector b).
    const std::size_t k = a.shape().back();
    const std::size_t bk = b.shape()[0], n = rb == 2 ? b.shape()[1] : 1;
    if (k != bk) mismatch(a, b, "inner dimensions differ");
    Shape out(a.shape().begin(), a.shape().end() - 1);
    if (rb == 2) out.push_back(n);
    Op op("matmul", {a, b}, out);
    const std::size_t rows = numel(Shape(a.shape().begin(), a.shape().end() - 1));
    op.state<std::size_t>(rows);
    gemm("matmul", ConstMatrix{a.value().data(), rows, k}, false, ConstMatrix{b.value().data(), k, n}, false,
         Matrix{op.out().data(), rows, n});
    return op.finish(
        [](BackwardContext& ctx) {
            const std::size_t rows = ctx.state<std::size_t>();
            const Tensor &a = ctx.input(0), &b = ctx.input(1);
            const std::size_t k = a.shape().back(), n = b.dimension() == 2 ? b.shape()[1] : 1;
            if (k == 0) return;  // both gradients are empty (a GEMM into them would see a (0, 0) target)
            const ConstMatrix dy{ctx.grad_output().data(), rows, n};
            if (ctx.needs_grad(0)) gemm("matmul", dy, false, ConstMatrix{b.data(), k, n}, true, ctx.sink(0));
            if (ctx.needs_grad(1)) gemm("matmul", ConstMatrix{a.data(), rows, k}, true, dy, false, ctx.sink(1));
        },
        [](GraphContext& g) {
            const Var a = g.input(0), b = g.input(1);
            const Var& dy = g.grad_output();
            const long rows = static_cast<long>(g.state<std::size_t>()), k = static_cast<long>(b.shape()[0]);
            const Var a_rows = reshape(a, {rows, k});
            if (b.dim() == 2) {
                const long n = static_cast<long>(b.shape()[1]);
                if (g.needs_grad(0)) g.accumulate(0, matmul(dy, transpose(b)));
                if (g.needs_grad(1)) g.accumulate(1, matmul(transpose(a_rows), reshape(dy, {rows, n})));
            } else {  // b a vector (k): dy has a's leading shape
                if (g.needs_grad(0)) g.accumulate(0, unsqueeze(dy, -1) * b);
                if (g.needs_grad(1)) g.accumulate(1, matmul(transpose(a_rows), reshape(dy, {rows})));
            }
        });
}

Var linear(const Var& x, const Var& w, const Var& b) {
    const bool bias = b.defined();
    if (x.dim() == 0 || w.dim() != 2 || x.shape().back() != w.shape()[1] ||
        (bias && (b.dim() != 1 || b.shape()[0] != w.shape()[0]))) {
        throw ShapeError("xgrad::linear: expected x (..., I), w (O, I), b (O); got x " + shape_string(x.shape()) + ", w " +
                         shape_string(w.shape()) + (bias ? ", b " + shape_string(b.shape()) : std::string(", no b")));
    }
    const std::size_t out_features = w.shape()[0], in = w.shape()[1];
    Shape out(x.shape().begin(), x.shape().end() - 1);
    out.push_back(out_features);
    const std::size_t rows = numel(Shape(x.shape().begin(), x.shape().end() - 1));
    const std::initializer_list<Var> with_bias = {x, w, b}, without_bias = {x, w};
    Op op("linear", bias ? with_bias : without_bias, out);
    float* y = op.out().data();
    if (bias) {  // y's rows start as b, split over the threads; the product adds to them
        const float* bias_row = b.value().data();
        const auto fill_rows = [&](std::size_t begin, std::size_t end) {
            for (std::size_t r = begin; r < end; ++r) std::copy_n(bias_row, out_features, y + r * out_features);
        };
        parallel_for(rows, items_per_block(out_features), fill_rows);
    }
    gemm("linear", ConstMatrix{x.value().data(), rows, in}, false, as_matrix(w.value()), true, Matrix{y, rows, out_features},
         bias ? 1.f : 0.f);
    op.state<std::size_t>(rows);
    return op.finish(
        [](BackwardContext& ctx) {
            const std::size_t rows = ctx.state<std::size_t>();
            const Tensor &x = ctx.input(0), &w = ctx.input(1);
            const std::size_t out = w.shape()[0], in = w.shape()[1];
            const ConstMatrix dy{ctx.grad_output().data(), rows, out};
            if (ctx.needs_grad(0)) gemm("linear", dy, false, as_matrix(w), false, ctx.sink(0));
            if (ctx.needs_grad(1)) gemm("linear", dy, true, ConstMatrix{x.data(), rows, in}, false, ctx.sink(1));
            if (ctx.num_inputs() == 3 && ctx.needs_grad(2)) sum_to("linear", ctx.grad_output(), ctx.sink(2));
        },
        [](GraphContext& g) {
            const Var x = g.input(0), w = g.input(1);
            const Var& dy = g.grad_output();
            const long rows = static_cast<long>(g.state<std::size_t>());
            if (g.needs_grad(0)) g.accumulate(0, matmul(dy, w));
            if (g.needs_grad(1)) {
                const long out = static_cast<long>(w.shape()[0]), in = static_cast<long>(w.shape()[1]);
                g.accumulate(1, matmul(transpose(reshape(dy, {rows, out})), reshape(x, {rows, in})));
            }
            if (g.num_inputs() == 3) g.accumulate(2, dy);  // summed down to (O)
        });
}

}  // namespace xgrad
