// The op-authoring API: how every xgrad op, built in or your own, is written.
//
// An op is one function. It checks its operands, creates an `Op` (which
// takes the output from the pool and, when a gradient is needed, records the
// inputs), writes the forward result into `op.out()`, and hands its backward
// rule to `op.finish()`. The rule is a capture-free lambda that gets a
// BackwardContext. Whatever it needs beyond the inputs and the output is
// kept in the node while recording: saved tensors (`op.save`), typed state
// of the op's own (`op.state<T>(...)`: integers, shapes, axes, a small
// struct) and an index list (`op.index(n)`: arg-max positions, gathered
// rows). None of these allocates in a steady-state training loop.
// docs/extending.md walks through two ops.
//
//   Var softplus(const Var& x) {
//       Op op("softplus", {x}, x.shape());
//       xt::noalias(op.out()) = xt::maximum(x.value(), 0.f) + xt::log1p(xt::exp(-xt::abs(x.value())));
//       return op.finish([](BackwardContext& ctx) {
//           ctx.accumulate(0, ctx.grad_output() / (1.f + xt::exp(-ctx.input(0))));
//       });
//   }
#pragma once

#include <algorithm>
#include <initializer_list>
#include <vector>

#include <xtensor/xassign.hpp>
#include <xtensor/xnoalias.hpp>

#include <xgrad/core/kernels.hpp>
#include <xgrad/core/var.hpp>

namespace xgrad {

class Op {
public:
    // Inputs are recorded only when grad mode is on and one of them requires
    // a gradient; otherwise the result is a plain value with no history.
    // Throws std::logic_error for an empty Var or a Var of another thread.
    Op(const char* name, std::initializer_list<Var> inputs, const Shape& output_shape);
    // Any number of inputs (a concatenation of 100 tensors, say).
    Op(const char* name, const std::vector<Var>& inputs, const Shape& output_shape);
    Op(const Op&) = delete;
    Op& operator=(const Op&) = delete;

    // The output buffer, uninitialised: the forward pass must fill all of it.
    Tensor& out();
    // Whether backward will run for this op (skip work only backward needs).
    bool records() const;
    // Whether input i will receive a gradient (false whenever !records()).
    bool needs_grad(std::size_t i) const;

    // A new tensor kept for backward, uninitialised; saved(k) in the rule
    // returns the k-th one saved. Only while records().
    Tensor& save(const Shape& shape);
    // Typed state of the op, constructed in place from `args` and returned
    // for the forward pass to fill; ctx.state<T>() in the rule. Any type of
    // up to 256 bytes (an svector shape of rank <= 4 stays inline too).
    template <class T, class... Args>
    T& state(Args&&... args) {
        return node().state.emplace<T>(std::forward<Args>(args)...);
    }
    // An integer list of n elements kept for backward (uninitialised);
    // ctx.index() in the rule. Only while records().
    std::size_t* index(std::size_t n);

    // Attaches the backward rule and returns the result.
    Var finish(BackwardFn backward);

private:
    void start(const char* name, const Var* inputs, std::size_t count, const Shape& output_shape);
    detail::Node& node() const { return *result_.node_; }
    void require_recording(const char* what) const;
    Var result_;
};

// A pooled buffer for the duration of a scope: returned to the pool when it
// ends, also when an exception leaves it.
//   Scratch cols(Shape{k, n});  gemm(..., as_matrix(cols.tensor()), ...);
class Scratch {
public:
    explicit Scratch(const Shape& shape) : tensor_(empty_tensor()) { tensor_pool().acquire(tensor_, shape); }
    ~Scratch() { tensor_pool().release(tensor_); }
    Scratch(const Scratch&) = delete;
    Scratch& operator=(const Scratch&) = delete;
    Tensor& tensor() { return tensor_; }
    float* data() { return tensor_.data(); }

private:
    Tensor tensor_;
};

class BackwardContext {
public:
    explicit BackwardContext(detail::Node& node) : node_(node) {}

    const char* op_name() const { return node_.op; }
    const Tensor& output() const { return node_.value; }
    const Tensor& grad_output() const { return node_.grad; }
    std::size_t num_inputs() const { return node_.inputs.size(); }
    const Tensor& input(std::size_t i) const { return node_.inputs[i].node->value; }
    const Tensor& saved(std::size_t k = 0) const;
    template <class T>
    const T& state() const {
        return node_.state.get<T>(node_.op);
    }
    const std::vector<std::size_t>& index() const { return node_.index; }
    // Whether input i wants a gradient; rules skip the work for those that do not.
    bool needs_grad(std::size_t i) const { return node_.inputs[i].node->requires_grad; }

    // grad(input i) += expr, where expr has input i's shape.
    template <class E>
    void accumulate(std::size_t i, const E& expr) {
        if (!needs_grad(i)) return;
        bool fresh = false;
        Tensor& g = grad_buffer(i, fresh);
        // noalias() would silently resize g to a wrongly shaped expression.
        if (!same_shape(expr.shape(), g.shape())) throw_gradient_shape(i, expr.shape());
        // When every operand is laid out like g (no broadcasting), the
        // assignment goes straight to xtensor's linear SIMD loop, skipping
        // the shape computations of a general assignment: on small tensors
        // they cost more than the arithmetic.
        using Assigner = xt::xexpression_assigner_base<xt::xtensor_expression_tag>;
        const bool linear = expr.has_linear_assign(g.strides());
        if (fresh) {
            if (linear) {
                Assigner::assign_data(g, expr, true);
            } else {
                xt::noalias(g) = expr;
            }
        } else if (linear) {
            Assigner::assign_data(g, g + expr, true);
        } else {
            xt::noalias(g) += expr;
        }
    }

    // grad(input i) += expr summed down to input i's shape, where expr has
    // the output's shape and the forward pass broadcast input i to it.
    template <class E>
    void accumulate_broadcast(std::size_t i, const E& expr) {
        if (!needs_grad(i)) return;
        if (input(i).shape() == output().shape()) {
            accumulate(i, expr);
            return;
        }
        Scratch full(output().shape());
        xt::noalias(full.tensor()) = expr;
        accumulate_sum_to(i, full.tensor());
    }

    // grad(input i) += scale * m summed down to input i's shape (m's shape
    // is input i's broadcast to some larger one, or equal to it).
    void accumulate_sum_to(std::size_t i, const Tensor& m, float scale = 1.f);
    // grad(input i) += scale * m broadcast up to input i's shape; m given
    // as data and shape (a reduction's gradient read with its kept dimensions).
    void accumulate_expand(std::size_t i, const float* m, const Shape& m_shape, float scale = 1.f);
    // grad(input i) += values given as runs of elements that together cover
    // every element of input i exactly once (a concatenation's or a
    // reshape's gradient): write(put) calls put(offset, values, count) for
    // each run, offset counting elements of input i in row-major order.
    template <class Write>
    void accumulate_runs(std::size_t i, const Write& write) {
        if (!needs_grad(i)) return;
        bool fresh = false;
        float* base = grad_buffer(i, fresh).data();
        if (fresh) {
            write([base](std::size_t offset, const float* values, std::size_t count) {
                std::copy(values, values + count, base + offset);
            });
        } else {
            write([base](std::size_t offset, const float* values, std::size_t count) {
                for (std::size_t j = 0; j < count; ++j) base[offset + j] += values[j];
            });
        }
    }

    // grad(input i) += op(a) . op(b) through BLAS without copies, the
    // gradient viewed as a matrix with the product's column count (a
    // (..., K, N) input's gradient as (... * K, N)).
    void accumulate_matmul(std::size_t i, ConstMatrix a, bool transpose_a, ConstMatrix b, bool transpose_b);

    // grad(input i) += values computed element by element: compute(put)
    // calls put(k, value) once for every element k (row-major) of input i.
    // put assigns into a fresh buffer and adds otherwise, so a rule that
    // computes a whole gradient needs no zero-filled buffer first.
    template <class Compute>
    void accumulate_elements(std::size_t i, const Compute& compute) {
        if (!needs_grad(i)) return;
        bool fresh = false;
        float* base = grad_buffer(i, fresh).data();
        if (fresh) {
            compute([base](std::size_t k, float value) { base[k] = value; });
        } else {
            compute([base](std::size_t k, float value) { base[k] += value; });
        }
    }

    // grad(input i) += what write(g, add) computes into the buffer g: write
    // must store its result when add is false and add it when true, as a
    // kernel with BLAS's beta or an accumulate flag does (the convolution
    // kernels, say).
    template <class Write>
    void accumulate_into(std::size_t i, const Write& write) {
        if (!needs_grad(i)) return;
        bool fresh = false;
        float* g = grad_buffer(i, fresh).data();
        write(g, !fresh);
    }

    // The gradient of input i as a buffer to add into, zero-filled the first
    // time: for rules that write only parts of it (a slice, scattered rows,
    // arg-max positions).
    Tensor& accumulator(std::size_t i);

private:
    // The raw buffer of input i's gradient; `fresh` tells whether it holds
    // no data yet (assign to it) or a partial gradient (add to it).
    Tensor& grad_buffer(std::size_t i, bool& fresh);
    template <class S>
    static bool same_shape(const S& a, const Shape& b) {
        if (a.size() != b.size()) return false;
        for (std::size_t d = 0; d < b.size(); ++d) {
            if (static_cast<std::size_t>(a[d]) != b[d]) return false;
        }
        return true;
    }
    template <class S>
    [[noreturn]] void throw_gradient_shape(std::size_t i, const S& shape) const {
        Shape s(shape.size());
        for (std::size_t d = 0; d < s.size(); ++d) s[d] = static_cast<std::size_t>(shape[d]);
        throw_gradient_shape(i, s);
    }
    [[noreturn]] void throw_gradient_shape(std::size_t i, const Shape& shape) const;

    detail::Node& node_;
};

}  // namespace xgrad
