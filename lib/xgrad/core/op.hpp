// The op-authoring API: how every xgrad op, built in or your own, is written.
//
// An op is one function. It checks its operands, creates an `Op` (which
// takes the output from the pool and, when a gradient is needed, records
// the inputs), writes the forward result into `op.out()`, and hands its
// backward rules to `op.finish()`:
//
//   Var softplus(const Var& x) {
//       Op op("softplus", {x}, x.shape());
//       xt::noalias(op.out()) = xt::maximum(x.value(), 0.f) + xt::log1p(xt::exp(-xt::abs(x.value())));
//       return op.finish(
//           [](BackwardContext& ctx) { ctx.accumulate(0, ctx.grad_output() / (1.f + xt::exp(-ctx.input(0)))); },
//           [](GraphContext& g) { g.accumulate(0, g.grad_output() * sigmoid(g.input(0))); });
//   }
//
// The two rules compute the same gradient:
// - the kernel rule (BackwardContext) on tensors, for the ordinary
//   backward: fast, allocation-free;
// - the differentiable rule (GraphContext) with xgrad's ops on Vars, used
//   when a pass records its own graph (create_graph; var.hpp), so that the
//   gradient can be differentiated again. It may read only the inputs, the
//   output, grad_output and constants (typed state, the index list, saved
//   tensors that do not depend on the inputs, like a dropout mask): a
//   saved intermediate (a batch mean, say) must be computed again from the
//   inputs, or its own derivative is silently lost.
// finish(graph) alone serves both passes (the kernel pass runs it on values,
// recording nothing): enough where it is fast enough. finish(kernel) alone
// makes the op once differentiable: create_graph through it throws.
//
// Rules are capture-free lambdas. What they need beyond inputs and output is
// kept in the node while recording: saved tensors (`op.save`), typed state
// (`op.state<T>(...)`: integers, shapes, axes, a small struct) and an index
// list (`op.index(n)`: arg-max positions, gathered rows). Saved tensors
// come from a size-keyed pool and typed state lives in the node: neither
// allocates in a steady-state training loop. The index list grows the
// node's own vector, so it allocates when an op lands on a recycled node
// whose list was shorter, which happens in a steady state whose steps
// differ (a lazy penalty every k steps): data on such a path goes into a
// saved tensor. docs/extending.md walks through three ops.
#pragma once

#include <algorithm>
#include <initializer_list>
#include <optional>
#include <type_traits>
#include <vector>

#include <xtensor/xassign.hpp>
#include <xtensor/xnoalias.hpp>

#include <xgrad/core/kernels.hpp>
#include <xgrad/core/var.hpp>

namespace xgrad {

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

    // The output buffer, uninitialised: the forward pass must fill all of it
    // (debug builds fill it with a marked NaN and check at finish()).
    Tensor& out();
    // Whether backward will run for this op (skip work only backward needs).
    bool records() const;
    // Whether input i will receive a gradient (false whenever !records()).
    bool needs_grad(std::size_t i) const;

    // A new tensor kept for backward, uninitialised; saved(k) in the rule
    // returns the k-th one saved. Only while records().
    Tensor& save(const Shape& shape);
    // A tensor the forward pass needs either way and backward reads too (a
    // batch's means, say): save(shape) while records(), otherwise a pooled
    // buffer returned when the Op goes out of scope. At most once per op.
    Tensor& save_or_scratch(const Shape& shape);
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

    // Attaches the rules and returns the result.
    Var finish(BackwardFn kernel, GraphFn graph) { return attach(kernel, graph); }
    Var finish(GraphFn graph) { return attach(nullptr, graph); }       // one rule for both passes
    Var finish(BackwardFn kernel) { return attach(kernel, nullptr); }  // once differentiable

private:
    void start(const char* name, const Var* inputs, std::size_t count, const Shape& output_shape);
    Var attach(BackwardFn kernel, GraphFn graph);
    detail::Node& node() const { return *result_.node_; }
    void require_recording(const char* what) const;
    Var result_;
    std::optional<Scratch> scratch_;  // save_or_scratch's buffer when not recording
    bool save_or_scratch_called_ = false;
};

// Input i's gradient as a kernel writes it: stored (`add` false: the first
// contribution; the buffer holds garbage) or added (`add` true). BLAS's beta,
// the convolution kernels' accumulate flag, sum_to and expand_to take it
// as it is; `elements` and `run` hoist the choice out of a loop.
struct GradSink {
    Tensor& grad;
    bool add;

    float* data() const { return grad.data(); }
    const Shape& shape() const { return grad.shape(); }
    float beta() const { return add ? 1.f : 0.f; }
    // compute(put) calls put(k, value) once for every element k (row-major).
    template <class Compute>
    void elements(const Compute& compute) const {
        float* base = grad.data();
        if (add) {
            compute([base](std::size_t k, float value) { base[k] += value; });
        } else {
            compute([base](std::size_t k, float value) { base[k] = value; });
        }
    }
    // Elements [offset, offset + count) from `values`; the runs of one rule
    // must together cover every element once.
    void run(std::size_t offset, const float* values, std::size_t count) const {
        float* base = grad.data() + offset;
        if (add) {
            for (std::size_t j = 0; j < count; ++j) base[j] += values[j];
        } else {
            std::copy(values, values + count, base);
        }
    }
};

// The kernels of kernels.hpp writing into a sink.
inline void sum_to(const char* op, const Tensor& src, const GradSink& dst, float scale = 1.f) {
    sum_to(op, src.data(), src.shape(), dst.data(), dst.shape(), dst.add, scale);
}
inline void expand_to(const char* op, const float* src, const Shape& src_shape, const GradSink& dst, float scale = 1.f) {
    expand_to(op, src, src_shape, dst.data(), dst.shape(), dst.add, scale);
}
// The sink viewed as a matrix with the product's column count (a (..., K, N)
// gradient as (... * K, N)).
void gemm(const char* op, ConstMatrix a, bool transpose_a, ConstMatrix b, bool transpose_b, const GradSink& dst);

// The kernel rule's view of a node.
class BackwardContext {
public:
    explicit BackwardContext(detail::Node& node) : node_(node) {}

    const char* op_name() const { return node_.op; }
    const Tensor& output() const { return node_.value; }
    const Tensor& grad_output() const { return node_.grad; }
    std::size_t num_inputs() const { return node_.inputs.size(); }
    const Tensor& input(std::size_t i) const { return edge(i)->value; }
    const Tensor& saved(std::size_t k = 0) const;
    template <class T>
    const T& state() const {
        return node_.state.get<T>(node_.op);
    }
    const std::vector<std::size_t>& index() const { return node_.index; }
    // Whether input i wants a gradient; rules skip the work for those that do not.
    bool needs_grad(std::size_t i) const { return edge(i)->wanted; }

    // grad(input i) += expr, where expr has input i's shape, or a shape
    // input i was broadcast to (then it is summed down). Skips an input
    // that needs no gradient.
    template <class E>
    void accumulate(std::size_t i, const E& expr) {
        if (!needs_grad(i)) return;
        bool fresh = false;
        Tensor& g = grad_buffer(i, fresh);
        if (!same_shape(expr.shape(), g.shape())) {
            accumulate_broadcast(i, expr, g, fresh);
            return;
        }
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
    // Input i's gradient for a kernel that stores or adds. Call only when
    // needs_grad(i).
    GradSink sink(std::size_t i) {
        bool fresh = false;
        Tensor& g = grad_buffer(i, fresh);
        return {g, !fresh};
    }
    // Input i's gradient to add into, zero-filled on first use: for rules
    // that write only parts of it (a slice, scattered rows, arg-max
    // positions). Call only when needs_grad(i).
    Tensor& accumulator(std::size_t i);

private:
    detail::Node* edge(std::size_t i) const {
        if (i >= node_.inputs.size()) throw_input_index(i);
        return node_.inputs[i].node;
    }
    // The raw buffer of input i's gradient; `fresh` tells whether it holds
    // no data yet (assign to it) or a partial gradient (add to it).
    Tensor& grad_buffer(std::size_t i, bool& fresh) {
        detail::Node& in = *edge(i);
        if (!in.wanted) throw_unwanted(i);
        fresh = !in.is_leaf && !in.grad_written;
        if (fresh) detail::acquire_gradient(in);
        in.grad_written = true;
        return in.grad;
    }
    [[noreturn]] void throw_unwanted(std::size_t i) const;
    template <class E>
    void accumulate_broadcast(std::size_t i, const E& expr, Tensor& g, bool fresh) {
        Shape full_shape(expr.shape().size());
        std::copy(expr.shape().begin(), expr.shape().end(), full_shape.begin());
        if (!broadcasts_to(g.shape(), full_shape)) throw_gradient_shape(i, full_shape);
        if constexpr (std::is_same_v<E, Tensor>) {
            sum_to(node_.op, expr, GradSink{g, !fresh});  // a tensor (dy, say) is summed as it is
        } else {
            Scratch full(full_shape);
            xt::noalias(full.tensor()) = expr;
            sum_to(node_.op, full.tensor(), GradSink{g, !fresh});
        }
    }
    template <class S>
    static bool same_shape(const S& a, const Shape& b) {
        if (a.size() != b.size()) return false;
        for (std::size_t d = 0; d < b.size(); ++d) {
            if (static_cast<std::size_t>(a[d]) != b[d]) return false;
        }
        return true;
    }
    [[noreturn]] void throw_gradient_shape(std::size_t i, const Shape& shape) const;
    [[noreturn]] void throw_input_index(std::size_t i) const;

    detail::Node& node_;
};

// The differentiable rule's view of a node: the same reads as
// BackwardContext, as Vars.
class GraphContext {
public:
    // `recording`: the gradients join the graph (create_graph); else the rule
    // serves an ordinary backward and only their values are added.
    GraphContext(detail::Node& node, Var grad_output, bool recording)
        : node_(node), grad_output_(std::move(grad_output)), recording_(recording) {}

    const char* op_name() const { return node_.op; }
    Var output() const { return Var::shared(&node_); }
    const Var& grad_output() const { return grad_output_; }
    std::size_t num_inputs() const { return node_.inputs.size(); }
    Var input(std::size_t i) const { return Var::shared(edge(i)); }
    bool needs_grad(std::size_t i) const { return edge(i)->wanted; }
    template <class T>
    const T& state() const {
        return node_.state.get<T>(node_.op);
    }
    const std::vector<std::size_t>& index() const { return node_.index; }
    // A saved tensor, for constants only (see the top of this file).
    const Tensor& saved(std::size_t k = 0) const;

    // grad(input i) += g, where g has input i's shape or one input i was
    // broadcast to (then it is summed down). Skips an input that needs no
    // gradient.
    void accumulate(std::size_t i, const Var& g);

private:
    detail::Node* edge(std::size_t i) const;

    detail::Node& node_;
    Var grad_output_;
    bool recording_;
};

// A leaf (no history) holding expr's value, for differentiable rules: a
// mask, the signs of an input. Its storage comes from the pool.
template <class E>
Var constant(const E& expr) {
    Shape shape(expr.shape().size());
    std::copy(expr.shape().begin(), expr.shape().end(), shape.begin());
    Var v = Var::zeros(shape);
    xt::noalias(v.mutable_value()) = expr;
    return v;
}

}  // namespace xgrad
