// The op-authoring API: how every xgrad op, built in or your own, is written.
//
// An op is one function. It checks its operands, creates an `Op` (which
// allocates the output from the pool and, when a gradient is needed, records
// the inputs), writes the forward result into `op.out()`, and hands its
// backward rule to `op.finish()`. The rule is a capture-free lambda that gets
// a BackwardContext; anything it needs beyond inputs and output goes into
// `op.set_attr()` or `op.saved()`. docs/extending.md walks through one.
//
//   Var softplus(const Var& x) {
//       Op op("softplus", {x}, x.shape());
//       xt::noalias(op.out()) = xt::log1p(xt::exp(-xt::abs(x.value()))) + xt::maximum(x.value(), 0.f);
//       return op.finish([](BackwardContext& ctx) {
//           ctx.accumulate(0, ctx.grad_output() / (1.f + xt::exp(-ctx.input(0))));
//       });
//   }
#pragma once

#include <array>
#include <initializer_list>

#include <xtensor/xadapt.hpp>
#include <xtensor/xnoalias.hpp>

#include <xgrad/core/parallel.hpp>
#include <xgrad/core/var.hpp>

namespace xgrad {

// c = op(a) . op(b) + beta c through BLAS (gemv when c is a single row or
// column), transposing on the fly; large products are split by rows over
// xgrad's threads (parallel.hpp). Checks every shape first (BLAS itself
// would write past a too-small c); `op_name` goes into the error message.
void gemm_into(const char* op_name, const Tensor& a, bool transpose_a, const Tensor& b, bool transpose_b, Tensor& c,
               float beta = 0.f);

namespace detail {
// Elements [begin, end) of t as a 1-D expression over its storage (no copy).
inline auto elements(Tensor& t, std::size_t begin, std::size_t end) {
    return xt::adapt(t.data() + begin, end - begin, xt::no_ownership(), std::array<std::size_t, 1>{end - begin});
}
inline auto elements(const Tensor& t, std::size_t begin, std::size_t end) {
    return xt::adapt(t.data() + begin, end - begin, xt::no_ownership(), std::array<std::size_t, 1>{end - begin});
}
}  // namespace detail

// out = f(in...) elementwise, for ops with costly elements (exp, log,
// tanh): f(out, in...) assigns an expression over 1-D views of one range of
// elements, and large tensors are split into ranges over xgrad's threads.
// All tensors hold the same number of elements.
//   parallel_elementwise(op.out(), [](auto& y, const auto& x) { xt::noalias(y) = xt::exp(x); }, x.value());
template <class F, class... In>
void parallel_elementwise(Tensor& out, const F& f, const In&... in) {
    parallel_for(out.size(), 16384, [&](std::size_t begin, std::size_t end) {
        auto range = detail::elements(out, begin, end);
        f(range, detail::elements(in, begin, end)...);
    });
}

class Op {
public:
    // Inputs are recorded only when grad mode is on and one of them requires
    // a gradient; otherwise the result is a plain value with no history.
    Op(const char* name, std::initializer_list<Var> inputs, const Shape& output_shape);
    Op(const Op&) = delete;
    Op& operator=(const Op&) = delete;

    // The output buffer, uninitialised: the forward pass must fill all of it.
    Tensor& out();
    // Whether backward will run for this op (skip work only backward needs).
    bool records() const;
    // An extra buffer kept for backward (uninitialised); only when records().
    Tensor& saved(const Shape& shape);
    void set_attr(int index, float value);
    // Attaches the backward rule and returns the result.
    Var finish(BackwardFn backward);

private:
    Var result_;
};

class BackwardContext {
public:
    explicit BackwardContext(detail::Node& node) : node_(node) {}

    const char* op_name() const { return node_.op; }
    const Tensor& output() const { return node_.value; }
    const Tensor& grad_output() const { return node_.grad; }
    const Tensor& input(int i) const { return node_.inputs[i]->value; }
    const Tensor& saved() const { return node_.saved; }
    float attr(int i) const { return node_.attrs[i]; }
    // Whether input i wants a gradient; rules skip the work for those that do not.
    bool needs_grad(int i) const { return node_.inputs[i]->requires_grad; }

    // grad(input i) += expr, where expr has input i's shape.
    template <class E>
    void accumulate(int i, const E& expr) {
        if (!needs_grad(i)) return;
        bool overwrite = false;
        Tensor& g = grad_buffer(i, overwrite);
        // noalias() would silently resize g to a wrongly shaped expression.
        if (expr.shape()[0] != g.shape()[0] || expr.shape()[1] != g.shape()[1]) throw_gradient_shape(i, expr.shape());
        if (overwrite) {
            xt::noalias(g) = expr;
        } else {
            xt::noalias(g) += expr;
        }
    }

    // grad(input i) += expr summed over the rows and/or columns that the
    // forward pass broadcast; expr has the output's shape.
    template <class E>
    void accumulate_broadcast(int i, const E& expr) {
        if (!needs_grad(i)) return;
        if (shape_of(input(i)) == shape_of(output())) {
            accumulate(i, expr);
            return;
        }
        Tensor scratch = tensor_pool().acquire(shape_of(output()));
        xt::noalias(scratch) = expr;
        accumulate_sum_to_input(i, scratch);
        tensor_pool().release(scratch);
    }

    // grad(input i) += op(a) . op(b), through BLAS, without copies.
    void accumulate_matmul(int i, const Tensor& a, bool transpose_a, const Tensor& b, bool transpose_b);

    // grad(input i) += m summed down to input i's shape (over rows when
    // input i has one row, over columns when it has one column).
    void accumulate_sum_to_input(int i, const Tensor& m);

    // The raw gradient buffer of input i. `overwrite` tells whether it holds
    // no data yet (assign to it) or a partial gradient (add to it).
    Tensor& grad_buffer(int i, bool& overwrite);

private:
    template <class S>
    [[noreturn]] void throw_gradient_shape(int i, const S& shape) const {
        throw_gradient_shape(i, Shape{static_cast<std::size_t>(shape[0]), static_cast<std::size_t>(shape[1])});
    }
    [[noreturn]] void throw_gradient_shape(int i, const Shape& shape) const;

    detail::Node& node_;
};

}  // namespace xgrad
