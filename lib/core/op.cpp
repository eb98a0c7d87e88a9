#include <xgrad/core/op.hpp>

#include "arena.hpp"

#include <algorithm>
#include <string>

namespace xgrad {

using detail::Node;

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

std::size_t* Op::index(std::size_t count) {
    require_recording("index()");
    Node& n = node();
    n.index.resize(count);
    return n.index.data();
}

Var Op::finish(BackwardFn backward) {
    if (records()) result_.node_->backward = backward;
    return std::move(result_);
}

// ---- BackwardContext ----------------------------------------------------------

const Tensor& BackwardContext::saved(std::size_t k) const {
    if (k >= node_.saved_count) {
        throw std::logic_error(std::string("xgrad: the backward of '") + node_.op + "' read saved tensor " + std::to_string(k) +
                               " of " + std::to_string(node_.saved_count));
    }
    return node_.saved[k];
}

Tensor& BackwardContext::grad_buffer(std::size_t i, bool& fresh) {
    Node& in = *node_.inputs[i].node;
    if (!in.requires_grad) {
        throw std::logic_error(std::string("xgrad: the backward of '") + node_.op + "' wrote a gradient for input " +
                               std::to_string(i) + ", which does not require one (check needs_grad first)");
    }
    fresh = !in.is_leaf && !in.grad_written;
    in.grad_written = true;
    return in.grad;
}

void BackwardContext::throw_gradient_shape(std::size_t i, const Shape& shape) const {
    throw ShapeError(std::string("xgrad: the backward of '") + node_.op + "' produced a gradient of shape " +
                     shape_string(shape) + " for input " + std::to_string(i) + " of shape " + shape_string(input(i)));
}

void BackwardContext::accumulate_sum_to(std::size_t i, const Tensor& m, float scale) {
    if (!needs_grad(i)) return;
    bool fresh = false;
    Tensor& g = grad_buffer(i, fresh);
    sum_to(node_.op, m, g, !fresh, scale);
}

void BackwardContext::accumulate_expand(std::size_t i, const float* m, const Shape& m_shape, float scale) {
    if (!needs_grad(i)) return;
    bool fresh = false;
    Tensor& g = grad_buffer(i, fresh);
    expand_to(node_.op, m, m_shape, g.data(), g.shape(), !fresh, scale);
}

void BackwardContext::accumulate_matmul(std::size_t i, ConstMatrix a, bool transpose_a, ConstMatrix b, bool transpose_b) {
    if (!needs_grad(i)) return;
    bool fresh = false;
    Tensor& g = grad_buffer(i, fresh);
    const std::size_t cols = transpose_b ? b.rows : b.cols;
    const Matrix target{g.data(), cols == 0 ? 0 : g.size() / cols, cols};
    gemm(node_.op, a, transpose_a, b, transpose_b, target, fresh ? 0.f : 1.f);
}

Tensor& BackwardContext::accumulator(std::size_t i) {
    bool fresh = false;
    Tensor& g = grad_buffer(i, fresh);
    if (fresh) g.fill(0.f);
    return g;
}

}  // namespace xgrad
