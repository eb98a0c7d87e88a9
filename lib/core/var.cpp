#include <xgrad/core/var.hpp>

#include <algorithm>
#include <deque>
#include <string>

#include <xgrad/core/op.hpp>

namespace xgrad {
namespace detail {
namespace {

// Per-thread storage behind all Vars: nodes are recycled through a free list
// and tensors through the pool, and the backward pass reuses its work lists,
// so a steady-state training step allocates nothing.
struct Arena {
    std::deque<Node> nodes;  // a deque never moves its elements
    std::vector<Node*> free_nodes;
    TensorPool pool;
    std::uint64_t next_seq = 1;
    std::uint64_t next_visit = 1;
    int no_grad_depth = 0;
    std::vector<Node*> releasing, order, pending;

    ~Arena() { destroyed = true; }
    static thread_local bool destroyed;
};
thread_local bool Arena::destroyed = false;

Arena& arena() {
    thread_local Arena a;
    return a;
}

void reset(Node& n) {
    n.op = "leaf";
    n.backward = nullptr;
    n.num_inputs = 0;
    n.inputs.fill(nullptr);
    n.attrs.fill(0.f);
    n.version = 0;
    n.visit = 0;
    n.is_leaf = true;
    n.requires_grad = false;
    n.graph_freed = false;
    n.grad_written = false;
    n.value_pooled = false;
}

}  // namespace

Node* new_node() {
    Arena& a = arena();
    Node* n;
    if (a.free_nodes.empty()) {
        n = &a.nodes.emplace_back();
    } else {
        n = a.free_nodes.back();
        a.free_nodes.pop_back();
    }
    n->refs = 1;
    n->seq = a.next_seq++;
    return n;
}

void add_ref(Node* n) noexcept { ++n->refs; }

void drop_ref(Node* n) noexcept {
    if (--n->refs > 0 || Arena::destroyed) return;
    // Iterative, so that freeing a deep graph cannot overflow the stack.
    Arena& a = arena();
    a.releasing.push_back(n);
    while (!a.releasing.empty()) {
        Node* m = a.releasing.back();
        a.releasing.pop_back();
        // Only pool-born values return to the pool: caching every tensor a
        // user wraps (a fresh batch each step) would grow it without bound.
        if (m->value_pooled) {
            a.pool.release(m->value);
        } else {
            m->value = Tensor();
        }
        a.pool.release(m->grad);
        a.pool.release(m->saved);
        for (int i = 0; i < m->num_inputs; ++i) {
            if (--m->inputs[i]->refs == 0) a.releasing.push_back(m->inputs[i]);
        }
        reset(*m);
        a.free_nodes.push_back(m);
    }
}

}  // namespace detail

using detail::Node;

TensorPool& tensor_pool() { return detail::arena().pool; }

// ---- Var ------------------------------------------------------------------

Var::Var(Tensor value, bool requires_grad) : node_(detail::new_node()) {
    node_->value = std::move(value);
    set_requires_grad(requires_grad);
}

Var Var::full(std::size_t rows, std::size_t cols, float fill, bool requires_grad) {
    Tensor t = tensor_pool().acquire({rows, cols});
    t.fill(fill);
    Var v(std::move(t), requires_grad);
    v.node_->value_pooled = true;
    return v;
}

Var::Var(const Var& other) noexcept : node_(other.node_) {
    if (node_) detail::add_ref(node_);
}
Var::Var(Var&& other) noexcept : node_(other.node_) { other.node_ = nullptr; }
Var& Var::operator=(const Var& other) noexcept {
    if (other.node_) detail::add_ref(other.node_);
    if (node_) detail::drop_ref(node_);
    node_ = other.node_;
    return *this;
}
Var& Var::operator=(Var&& other) noexcept {
    if (this != &other) {
        if (node_) detail::drop_ref(node_);
        node_ = other.node_;
        other.node_ = nullptr;
    }
    return *this;
}
Var::~Var() {
    if (node_) detail::drop_ref(node_);
}

Node& Var::node() const {
    if (!node_) throw std::logic_error("xgrad: use of an empty (default-constructed) Var");
    return *node_;
}

Node& Var::leaf_node(const char* what) const {
    Node& n = node();
    if (!n.is_leaf) {
        throw std::logic_error(std::string("xgrad: ") + what + " is only for leaves (parameters, inputs); this Var is the result of '" +
                               n.op + "'");
    }
    return n;
}

const Tensor& Var::value() const { return node().value; }

float Var::item() const {
    const Tensor& v = value();
    if (v.size() != 1) throw ShapeError("xgrad::Var::item: expected a (1, 1) value, got " + shape_string(v));
    return v(0, 0);
}

bool Var::is_leaf() const { return node().is_leaf; }
bool Var::requires_grad() const { return node().requires_grad; }
const char* Var::op_name() const { return node().op; }
std::uint64_t Var::version() const { return node().version; }

void Var::set_requires_grad(bool requires) {
    Node& n = leaf_node("set_requires_grad()");
    n.requires_grad = requires;
    if (requires && n.grad.shape() != n.value.shape()) {
        n.grad = tensor_pool().acquire(shape_of(n.value));
        n.grad.fill(0.f);
    }
}

const Tensor& Var::grad() const {
    Node& n = leaf_node("grad()");
    if (!n.requires_grad && n.grad.size() == 0) {
        throw std::logic_error("xgrad: grad() of a leaf that does not require a gradient");
    }
    return n.grad;
}

void Var::zero_grad() {
    Node& n = leaf_node("zero_grad()");
    n.grad.fill(0.f);
}

Tensor& Var::mutable_value() {
    Node& n = leaf_node("mutable_value()");
    ++n.version;
    return n.value;
}

Var Var::detach() const {
    Tensor copy = tensor_pool().acquire(shape());
    xt::noalias(copy) = value();
    Var v(std::move(copy));
    v.node_->value_pooled = true;
    return v;
}

// ---- grad mode ------------------------------------------------------------

NoGrad::NoGrad() { ++detail::arena().no_grad_depth; }
NoGrad::~NoGrad() { --detail::arena().no_grad_depth; }
bool grad_enabled() { return detail::arena().no_grad_depth == 0; }

// ---- Op -------------------------------------------------------------------

Op::Op(const char* name, std::initializer_list<Var> inputs, const Shape& output_shape)
    : result_(detail::new_node()) {
    if (inputs.size() > static_cast<std::size_t>(detail::kMaxInputs)) {
        throw std::logic_error(std::string("xgrad: op '") + name + "' has more inputs than a node holds");
    }
    Node& n = *result_.node_;
    n.op = name;
    n.is_leaf = false;
    bool any_requires = false;
    for (const Var& in : inputs) {
        if (!in.defined()) throw std::logic_error(std::string("xgrad: op '") + name + "' got an empty Var");
        any_requires = any_requires || in.node_->requires_grad;
    }
    n.requires_grad = any_requires && grad_enabled();
    if (n.requires_grad) {
        for (const Var& in : inputs) {
            n.inputs[n.num_inputs] = in.node_;
            n.input_versions[n.num_inputs] = in.node_->version;
            detail::add_ref(in.node_);
            ++n.num_inputs;
        }
    }
    n.value = tensor_pool().acquire(output_shape);
    n.value_pooled = true;
}

Tensor& Op::out() { return result_.node_->value; }
bool Op::records() const { return result_.node_->requires_grad; }
Tensor& Op::saved(const Shape& shape) {
    Node& n = *result_.node_;
    if (n.saved.size() == 0) n.saved = tensor_pool().acquire(shape);
    return n.saved;
}
void Op::set_attr(int index, float value) { result_.node_->attrs.at(static_cast<std::size_t>(index)) = value; }
Var Op::finish(BackwardFn backward) {
    if (records()) result_.node_->backward = backward;
    return std::move(result_);
}

// ---- backward -------------------------------------------------------------

namespace {

[[noreturn]] void throw_freed(const Node& n) {
    throw std::logic_error(std::string("xgrad: backward() through '") + n.op +
                           "', whose graph was already freed by an earlier backward(); pass "
                           "BackwardOptions with retain_graph = true to the first call to walk a graph twice");
}

void check_not_stale(const Node& n) {
    for (int i = 0; i < n.num_inputs; ++i) {
        if (n.inputs[i]->version != n.input_versions[i]) {
            throw std::logic_error(std::string("xgrad: backward() through '") + n.op + "': input " + std::to_string(i) + " " +
                                   shape_string(n.inputs[i]->value) +
                                   " was modified in place after the op used it (e.g. an optimizer step between forward "
                                   "and backward); its gradient would be wrong. Run the forward pass again.");
        }
    }
}

// Collects every node that `root` reaches through gradient-requiring edges,
// latest first: inputs always come after the ops that use them.
void collect_in_reverse_order(Node* root, std::vector<Node*>& order, std::vector<Node*>& pending, std::uint64_t visit) {
    order.clear();
    pending.clear();
    root->visit = visit;
    pending.push_back(root);
    while (!pending.empty()) {
        Node* n = pending.back();
        pending.pop_back();
        order.push_back(n);
        if (n->is_leaf) continue;
        if (n->graph_freed) throw_freed(*n);
        for (int i = 0; i < n->num_inputs; ++i) {
            Node* in = n->inputs[i];
            if (in->requires_grad && in->visit != visit) {
                in->visit = visit;
                pending.push_back(in);
            }
        }
    }
    std::sort(order.begin(), order.end(), [](const Node* a, const Node* b) { return a->seq > b->seq; });
}

}  // namespace

void backward(const Var& root, const BackwardOptions& options) {
    Node& r = root.node();
    if (r.value.size() != 1) {
        throw ShapeError("xgrad::backward: the root must be a (1, 1) scalar, got " + shape_string(r.value) + " from '" + r.op + "'");
    }
    if (!r.requires_grad) {
        throw std::logic_error(std::string("xgrad::backward: '") + r.op +
                               "' does not require a gradient (no parameter reaches it, or it was computed under NoGrad)");
    }
    detail::Arena& a = detail::arena();
    std::vector<Node*>& order = a.order;
    collect_in_reverse_order(&r, order, a.pending, a.next_visit++);

    for (Node* n : order) {
        if (n->is_leaf) continue;
        n->grad = a.pool.acquire(shape_of(n->value));
        n->grad_written = false;
    }
    if (r.is_leaf) {
        r.grad += 1.f;
    } else {
        r.grad.fill(1.f);
        r.grad_written = true;
    }

    auto release_grads = [&] {
        for (Node* n : order) {
            if (n->is_leaf) continue;
            a.pool.release(n->grad);
            n->grad_written = false;
        }
    };
    try {
        // Checked before any rule runs, so a refused backward adds nothing.
        for (Node* n : order) {
            if (!n->is_leaf) check_not_stale(*n);
        }
        for (Node* n : order) {
            // An op whose output received no gradient contributes nothing.
            if (n->is_leaf || !n->grad_written) continue;
            BackwardContext ctx(*n);
            n->backward(ctx);
        }
    } catch (...) {
        release_grads();
        throw;
    }
    release_grads();
    if (options.retain_graph) return;

    // Free the graph: mark every op first, then drop the input references
    // (which may recycle nodes that are still listed in `order`).
    for (Node* n : order) {
        if (n->is_leaf) continue;
        n->graph_freed = true;
        a.pool.release(n->saved);
    }
    for (Node* n : order) {
        const int count = n->num_inputs;
        std::array<Node*, detail::kMaxInputs> inputs = n->inputs;
        n->num_inputs = 0;
        for (int i = 0; i < count; ++i) detail::drop_ref(inputs[i]);
    }
}

}  // namespace xgrad
