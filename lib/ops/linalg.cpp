#include <cstring>
#include <string>

#include <xgrad/core/op.hpp>
#include <xgrad/ops.hpp>

namespace xgrad {

Var matmul(const Var& a, const Var& b) {
    if (a.cols() != b.rows()) {
        throw ShapeError("xgrad::matmul: inner dimensions differ: " + shape_string(a.shape()) + " . " + shape_string(b.shape()));
    }
    Op op("matmul", {a, b}, {a.rows(), b.cols()});
    gemm_into("matmul", a.value(), false, b.value(), false, op.out());
    return op.finish([](BackwardContext& ctx) {
        ctx.accumulate_matmul(0, ctx.grad_output(), false, ctx.input(1), true);
        ctx.accumulate_matmul(1, ctx.input(0), true, ctx.grad_output(), false);
    });
}

Var linear(const Var& x, const Var& w, const Var& b) {
    if (x.cols() != w.rows() || b.rows() != 1 || b.cols() != w.cols()) {
        throw ShapeError("xgrad::linear: expected x (N, I), w (I, O), b (1, O); got x " + shape_string(x.shape()) + ", w " +
                         shape_string(w.shape()) + ", b " + shape_string(b.shape()));
    }
    Op op("linear", {x, w, b}, {x.rows(), w.cols()});
    Tensor& y = op.out();
    const std::size_t cols = w.cols();
    for (std::size_t r = 0; r < x.rows(); ++r) std::memcpy(y.data() + r * cols, b.value().data(), cols * sizeof(float));
    gemm_into("linear", x.value(), false, w.value(), false, y, 1.f);
    return op.finish([](BackwardContext& ctx) {
        ctx.accumulate_matmul(0, ctx.grad_output(), false, ctx.input(1), true);
        ctx.accumulate_matmul(1, ctx.input(0), true, ctx.grad_output(), false);
        ctx.accumulate_sum_to_input(2, ctx.grad_output());
    });
}

}  // namespace xgrad
