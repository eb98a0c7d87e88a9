#include <xgrad/core/op.hpp>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>

#include "arena.hpp"

#include <xgrad/core/broadcast.hpp>

namespace xgrad {

using detail::Node;

namespace {

#ifndef NDEBUG
// Debug builds fill every fresh output with this NaN, whose payload no
// arithmetic produces, and check at finish() that none is left.
constexpr std::uint32_t kUnwrittenBits = 0x7fa0dead;

float unwritten_marker() {
    float f;
    std::memcpy(&f, &kUnwrittenBits, sizeof f);
    return f;
}

void check_written(const Node& n) {
    const float* v = n.value.data();
    for (std::size_t k = 0; k < n.value.size(); ++k) {
        std::uint32_t bits;
        std::memcpy(&bits, v + k, sizeof bits);
        if (bits == kUnwrittenBits) {
            throw std::logic_error(std::string("xgrad: op '") + n.op + "' did not write element " + std::to_string(k) +
                                   " of its " + shape_string(n.value) + " output (the forward pass must fill all of op.out())");
        }
    }
}
#endif

}  // namespace

// ---- Op -------------------------------------------------------------------

Op::Op(const char* name, std::initializer_list<Var> inputs, const Shape& output_shape) : result_(detail::new_node()) {
    start(name, inputs.begin(), inputs.size(), output_shape);
}

Op::Op(const char* name, const std::vector<Var>& inputs, const Shape& output_shape) : result_(detail::new_node()) {
    start(name, inputs.data(), inputs.size(), output_shape);
}

void Op::start(const char* name, const Var* inputs, std::size_t count, const Shape& output_shape) {
    Node& n = node();
    n.op = name;
    n.is_leaf = false;
    bool any_requires = false;
    for (std::size_t i = 0; i < count; ++i) {
        if (!inputs[i].defined()) {
            throw std::logic_error(std::string("xgrad: op '") + name + "' got an empty Var as input " + std::to_string(i));
        }
        detail::check_owner(*inputs[i].node_, "using", name);
        any_requires = any_requires || inputs[i].node_->requires_grad;
    }
    n.requires_grad = any_requires && n.arena->no_grad_depth == 0;
    if (n.requires_grad) {
        for (std::size_t i = 0; i < count; ++i) {
            Node* in = inputs[i].node_;
            n.inputs.push_back({in, in->version});
            detail::add_ref(in);
        }
    }
    n.arena->pool.acquire(n.value, output_shape);
    n.value_pooled = true;
#ifndef NDEBUG
    std::fill(n.value.begin(), n.value.end(), unwritten_marker());
#endif
}

Tensor& Op::out() { return node().value; }
bool Op::records() const { return node().requires_grad; }
bool Op::needs_grad(std::size_t i) const { return records() && node().inputs.at(i).node->requires_grad; }

void Op::require_recording(const char* what) const {
    if (!records()) {
        throw std::logic_error(std::string("xgrad: op '") + node().op + "' called " + what +
                               " while not recording; check records() first");
    }
}

Tensor& Op::save(const Shape& shape) {
    require_recording("save()");
    return detail::add_saved(node(), shape);
}

Tensor& Op::save_or_scratch(const Shape& shape) {
    // Once in either mode, so that a second call fails in the tests that record too.
    if (save_or_scratch_called_) {
        throw std::logic_error(std::string("xgrad: op '") + node().op + "' called save_or_scratch() twice");
    }
    save_or_scratch_called_ = true;
    if (records()) return save(shape);
    return scratch_.emplace(shape).tensor();
}

std::size_t* Op::index(std::size_t count) {
    require_recording("index()");
    Node& n = node();
    n.index.resize(count);
    return n.index.data();
}

Var Op::attach(BackwardFn kernel, GraphFn graph) {
#ifndef NDEBUG
    check_written(node());
#endif
    if (records()) {
        node().backward = kernel;
        node().graph = graph;
    }
    return std::move(result_);
}

// ---- sinks ------------------------------------------------------------------

void gemm(const char* op, ConstMatrix a, bool transpose_a, ConstMatrix b, bool transpose_b, const GradSink& dst) {
    const std::size_t cols = transpose_b ? b.rows : b.cols;
    const Matrix target{dst.data(), cols == 0 ? 0 : dst.grad.size() / cols, cols};
    gemm(op, a, transpose_a, b, transpose_b, target, dst.beta());
}

// ---- BackwardContext ----------------------------------------------------------

const Tensor& BackwardContext::saved(std::size_t k) const {
    if (k >= node_.saved_count) {
        throw std::logic_error(std::string("xgrad: the backward of '") + node_.op + "' read saved tensor " + std::to_string(k) +
                               " of " + std::to_string(node_.saved_count));
    }
    return node_.saved[k];
}

void BackwardContext::throw_unwanted(std::size_t i) const {
    throw std::logic_error(std::string("xgrad: the backward of '") + node_.op + "' wrote a gradient for input " +
                           std::to_string(i) + ", which needs none (check needs_grad first)");
}

void BackwardContext::throw_gradient_shape(std::size_t i, const Shape& shape) const {
    const Node& in = *edge(i);
    if (in.is_leaf && in.grad.shape() != in.value.shape()) {
        throw ShapeError(std::string("xgrad: the backward of '") + node_.op + "': input " + std::to_string(i) +
                         " is a leaf whose value is now " + shape_string(in.value) + " but whose gradient is " +
                         shape_string(in.grad) + " (its value was replaced by one of another shape; a leaf must keep its shape)");
    }
    throw ShapeError(std::string("xgrad: the backward of '") + node_.op + "' produced a gradient of shape " +
                     shape_string(shape) + " for input " + std::to_string(i) + " of shape " + shape_string(input(i)));
}

void BackwardContext::throw_input_index(std::size_t i) const {
    throw std::logic_error(std::string("xgrad: the backward of '") + node_.op + "' asked for input " + std::to_string(i) +
                           " of its " + std::to_string(node_.inputs.size()));
}

Tensor& BackwardContext::accumulator(std::size_t i) {
    bool fresh = false;
    Tensor& g = grad_buffer(i, fresh);
    if (fresh) g.fill(0.f);
    return g;
}

// ---- GraphContext ---------------------------------------------------------------

Node* GraphContext::edge(std::size_t i) const {
    if (i >= node_.inputs.size()) {
        throw std::logic_error(std::string("xgrad: the differentiable rule of '") + node_.op + "' asked for input " +
                               std::to_string(i) + " of its " + std::to_string(node_.inputs.size()));
    }
    return node_.inputs[i].node;
}

const Tensor& GraphContext::saved(std::size_t k) const { return BackwardContext(node_).saved(k); }

void GraphContext::accumulate(std::size_t i, const Var& g) {
    Node& in = *edge(i);
    if (!in.wanted) return;
    if (!g.defined()) {
        throw std::logic_error(std::string("xgrad: the differentiable rule of '") + node_.op + "' gave an empty Var for input " +
                               std::to_string(i));
    }
    Var summed = g;
    if (g.shape() != in.value.shape()) {
        if (!broadcasts_to(in.value.shape(), g.shape())) {
            throw ShapeError(std::string("xgrad: the differentiable rule of '") + node_.op + "' produced a gradient of shape " +
                             shape_string(g.shape()) + " for input " + std::to_string(i) + " of shape " + shape_string(in.value));
        }
        summed = sum_to(g, in.value.shape());
    }
    if (recording_) {
        if (in.graph_grad == nullptr) {
            in.graph_grad = summed.node_;
            detail::add_ref(in.graph_grad);
        } else {
            Var total = detail::add_gradients(Var::shared(in.graph_grad), summed);
            detail::drop_ref(in.graph_grad);
            in.graph_grad = total.node_;
            detail::add_ref(in.graph_grad);
        }
        return;
    }
    BackwardContext(node_).accumulate(i, summed.value());
}

}  // namespace xgrad
