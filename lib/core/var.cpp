#include <xgrad/core/var.hpp>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <xgrad/core/op.hpp>
#include <xgrad/core/parallel.hpp>

#include "arena.hpp"

namespace xgrad {
namespace detail {

namespace {

// The arena of the running thread. A plain pointer (no destructor), so that
// Vars destroyed after the thread's storage is gone (static objects at exit)
// can still tell; initial-exec: one load, no call, on every reference count.
__attribute__((tls_model("initial-exec"))) thread_local Arena* current = nullptr;
__attribute__((tls_model("initial-exec"))) thread_local bool current_gone = false;

// Owns the thread's arena. At thread exit an arena that Vars still point to
// is kept (unreachable by its thread, reachable from `orphans`), so that a Var
// used later from another thread meets a clear error instead of freed memory.
struct ArenaOwner {
    ArenaOwner() { current = new Arena; }
    ~ArenaOwner() {
        if (current->live == 0) {
            delete current;
        } else {
            // Never freed: nodes still point into these.
            static auto* orphans = new std::vector<Arena*>;  // NOLINT(bugprone-unhandled-exception-at-new): at thread exit
            orphans->push_back(current);
        }
        current = nullptr;
        current_gone = true;
    }
};

}  // namespace

Arena& arena() {
    if (current == nullptr) {
        if (current_gone) {
            std::fputs("xgrad: a Var was created while its thread was exiting\n", stderr);
            std::abort();
        }
        thread_local ArenaOwner owner;
    }
    return *current;
}

namespace {

[[noreturn]] void abort_foreign(const Node& n, const char* what) {
    std::fprintf(stderr,
                 "xgrad: %s a Var (a result of '%s') on a thread other than the one that created it; a graph and its Vars "
                 "belong to one thread (see xgrad/core/var.hpp)\n",
                 what, n.op);
    std::abort();
}

void reset(Node& n) noexcept {
    n.inputs.clear();  // keeps its capacity
    n.index.clear();
    n.state.reset();
    n.op = "leaf";
    n.backward = nullptr;
    n.graph = nullptr;
    n.graph_grad = nullptr;
    n.grad_history = nullptr;
    n.wanted = false;
    n.version = 0;
    n.visit = 0;
    n.is_leaf = true;
    n.requires_grad = false;
    n.graph_freed = false;
    n.grad_written = false;
    n.value_pooled = false;
}

// Whether a leaf has its gradient buffer. The size matters, not only the
// shape: an empty (released) tensor has shape () like a scalar value.
bool has_grad_buffer(const Node& n) { return n.grad.size() == n.value.size() && n.grad.shape() == n.value.shape(); }

}  // namespace

Tensor& add_saved(Node& n, const Shape& shape) {
    if (n.saved_count == n.saved.size()) n.saved.push_back(empty_tensor());
    Tensor& t = n.saved[n.saved_count++];
    n.arena->pool.acquire(t, shape);
    return t;
}

void OpState::reset() noexcept {
    if (destroy_) destroy_(bytes_);
    destroy_ = nullptr;
    type_ = nullptr;
}

void OpState::throw_mismatch(const char* op) {
    throw std::logic_error(std::string("xgrad: the backward of '") + op +
                           "' read its state as another type than the forward pass stored");
}

void acquire_gradient(Node& n) { n.arena->pool.acquire(n.grad, n.value.shape()); }

Node* new_node() {
    Arena& a = arena();
    Node* n;
    if (a.free_nodes.empty()) {
        n = &a.nodes.emplace_back();
        n->arena = &a;
        // Room for the inputs and saved tensors of any built-in op but
        // concat's and stack's (at most 5 inputs, 1 saved tensor), made with
        // the node: which recycled node an op gets varies from step to step
        // (a step with a gradient penalty makes more nodes than one without),
        // and room grown later would be an allocation in a steady state.
        n->inputs.reserve(5);
        n->saved.reserve(1);
    } else {
        n = a.free_nodes.back();
        a.free_nodes.pop_back();
    }
    n->refs = 1;
    n->seq = a.next_seq++;
    ++a.live;
    return n;
}

void add_ref(Node* n) {
    if (n->arena != current) check_owner(*n, "copying");
    ++n->refs;
}

void drop_ref(Node* n) noexcept {
    if (n->arena != current) {
        if (current_gone) return;  // this thread's storage is gone (objects destroyed at exit): nothing to recycle into
        abort_foreign(*n, "destroying");
    }
    if (--n->refs > 0) return;
    // Iterative, so that freeing a deep graph cannot overflow the stack.
    Arena& a = *current;
    a.releasing.push_back(n);
    while (!a.releasing.empty()) {
        Node* m = a.releasing.back();
        a.releasing.pop_back();
        // Only pool-born values return to the pool: caching every tensor a
        // user wraps (a fresh batch each step) would grow it without bound.
        if (m->value_pooled) {
            a.pool.release(m->value);
        } else {
            release_storage(m->value);  // a user's tensor
        }
        a.pool.release(m->grad);
        release_saved(a, *m);
        for (const Edge& e : m->inputs) {
            if (--e.node->refs == 0) a.releasing.push_back(e.node);
        }
        if (m->graph_grad != nullptr && --m->graph_grad->refs == 0) a.releasing.push_back(m->graph_grad);
        if (m->grad_history != nullptr && --m->grad_history->refs == 0) a.releasing.push_back(m->grad_history);
        reset(*m);
        a.free_nodes.push_back(m);
        --a.live;
    }
}

void drop_history(Node& n) noexcept {
    if (n.grad_history == nullptr) return;
    Node* held = n.grad_history;
    n.grad_history = nullptr;
    drop_ref(held);
}

void check_owner(const Node& n, const char* what, const char* using_op) {
    if (n.arena != current) {
        throw std::logic_error(std::string("xgrad: ") + (using_op ? std::string("op '") + using_op + "' " : std::string()) +
                               what + " a Var (a result of '" + n.op +
                               "') on a thread other than the one that created it; a graph and its Vars belong to one thread");
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

Var Var::full(const Shape& shape, float fill, bool requires_grad) {
    checked_numel("Var::full", shape);
    Var v(detail::new_node());
    v.node_->arena->pool.acquire(v.node_->value, shape);
    v.node_->value_pooled = true;
    v.node_->value.fill(fill);
    v.set_requires_grad(requires_grad);
    return v;
}

Var Var::scalar(float value, bool requires_grad) { return full(Shape{}, value, requires_grad); }

Var Var::shared(Node* n) {
    detail::add_ref(n);
    return Var(n);
}

Var::Var(const Var& other) : node_(other.node_) {
    if (node_) detail::add_ref(node_);
}
Var::Var(Var&& other) noexcept : node_(other.node_) { other.node_ = nullptr; }
// Self-assignment is safe: the reference is added before the old one is dropped.
Var& Var::operator=(const Var& other) {  // NOLINT(bugprone-unhandled-self-assignment)
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
        throw std::logic_error(std::string("xgrad: ") + what +
                               " is only for leaves (parameters, inputs); this Var is the result of '" + n.op + "'");
    }
    return n;
}

const Tensor& Var::value() const { return node().value; }

float Var::item() const {
    const Tensor& v = value();
    if (v.size() != 1) throw ShapeError("xgrad::Var::item: expected a one-element value, got " + shape_string(v));
    return *v.data();
}

bool Var::is_leaf() const { return node().is_leaf; }
bool Var::requires_grad() const { return node().requires_grad; }
const char* Var::op_name() const { return node().op; }
std::uint64_t Var::version() const { return node().version; }

void Var::set_requires_grad(bool requires) {
    Node& n = leaf_node("set_requires_grad()");
    n.requires_grad = requires;
    if (requires && !detail::has_grad_buffer(n)) {
        n.arena->pool.release(n.grad);
        n.arena->pool.acquire(n.grad, n.value.shape());
        n.grad.fill(0.f);
    }
}

const Tensor& Var::grad() const {
    Node& n = leaf_node("grad()");
    if (!n.requires_grad && !detail::has_grad_buffer(n)) {
        throw std::logic_error("xgrad: grad() of a leaf that does not require a gradient");
    }
    return n.grad;
}

Var Var::grad_var() const {
    const Tensor& g = grad();  // the checks
    Node& n = *node_;
    if (n.grad_history != nullptr) return shared(n.grad_history);
    return Var(Tensor(g));
}

Tensor& Var::mutable_grad() {
    grad();  // the same checks
    return node_->grad;
}

void Var::zero_grad() {
    Node& n = leaf_node("zero_grad()");
    // Split over the threads: an optimizer clears every parameter's
    // gradient each step, which on two threads the main thread did alone.
    float* grad = n.grad.data();
    parallel_for(n.grad.size(), kBlockElements,
                 [grad](std::size_t begin, std::size_t end) { std::fill(grad + begin, grad + end, 0.f); });
    detail::drop_history(n);
}

Tensor& Var::mutable_value() {
    Node& n = leaf_node("mutable_value()");
    detail::check_owner(n, "changing");
    ++n.version;
    return n.value;
}

Var Var::detach() const {
    Var v(detail::new_node());
    v.node_->arena->pool.acquire(v.node_->value, shape());
    v.node_->value_pooled = true;
    xt::noalias(v.node_->value) = value();
    return v;
}

// ---- grad mode and freezing --------------------------------------------------

NoGrad::NoGrad() { ++detail::arena().no_grad_depth; }
NoGrad::~NoGrad() { --detail::arena().no_grad_depth; }
bool grad_enabled() { return detail::arena().no_grad_depth == 0; }

void set_requires_grad(const std::vector<Var>& parameters, bool requires) {
    for (Var p : parameters) p.set_requires_grad(requires);
}

FreezeGuard::FreezeGuard(const std::vector<Var>& parameters) : parameters_(parameters) {
    for (const Var& p : parameters_) was_requiring_.push_back(p.requires_grad());
    set_requires_grad(parameters_, false);
}

// Cannot throw: the constructor already set each of these leaves, and
// restoring a setting finds its gradient buffer in place (no allocation).
FreezeGuard::~FreezeGuard() {  // NOLINT(bugprone-exception-escape)
    for (std::size_t i = 0; i < parameters_.size() && i < was_requiring_.size(); ++i) {
        Var p = parameters_[i];
        p.set_requires_grad(was_requiring_[i]);
    }
}

}  // namespace xgrad
