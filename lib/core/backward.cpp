// The backward walk behind backward() and grad(): which nodes a pass
// visits and in what order, which of them need a gradient, and how each
// node's rule is run: its kernel rule on tensors, or (create_graph) its
// differentiable rule on Vars, so that the pass records a graph of its own.
#include <algorithm>
#include <string>

#include <xgrad/core/broadcast.hpp>
#include <xgrad/core/op.hpp>
#include <xgrad/core/var.hpp>

#include "arena.hpp"

namespace xgrad {
namespace detail {

namespace {

[[noreturn]] void throw_freed(const Node& n) {
    throw std::logic_error(std::string("xgrad: backward() through '") + n.op +
                           "', whose graph was already freed by an earlier backward(); pass "
                           "BackwardOptions with retain_graph = true to the first call to walk a graph twice");
}

void check_not_stale(const Node& n) {
    for (std::size_t i = 0; i < n.inputs.size(); ++i) {
        const Edge& e = n.inputs[i];
        if (e.node->version != e.version) {
            throw std::logic_error(std::string("xgrad: backward() through '") + n.op + "': input " + std::to_string(i) + " " +
                                   shape_string(e.node->value) +
                                   " was modified in place after the op used it (e.g. an optimizer step between forward "
                                   "and backward); its gradient would be wrong. Run the forward pass again.");
        }
    }
}

// Whether n's rule has anything to do: some input needs a gradient.
bool runs(const Node& n) {
    if (n.is_leaf) return false;
    for (const Edge& e : n.inputs) {
        if (e.node->wanted) return true;
    }
    return false;
}

void drop(Node*& held) noexcept {
    if (held == nullptr) return;
    Node* n = held;
    held = nullptr;
    drop_ref(n);
}

}  // namespace

// A root of a pass and its seed, d loss / d root: a tensor, a Var (which may
// have history), or neither (ones).
struct Root {
    Node* node;
    const Tensor* seed_tensor;
    const Var* seed_var;
};

// What grad() differentiates for, and where its results go (views: a pass
// over one output and one input allocates nothing).
struct Targets {
    const Var* inputs;
    Var* results;
    std::size_t count;
};

// The roots of a pass (a view: backward() passes one without allocating).
struct Roots {
    const Root* first;
    std::size_t count;
    const Root* begin() const { return first; }
    const Root* end() const { return first + count; }
};

// One backward pass. The gradients go into the leaves' grad() (backward)
// or, when targets are given, are returned for them (grad()).
class Pass {
public:
    Pass(bool create_graph, bool retain_graph) : a_(arena()), graph_(create_graph), retain_(retain_graph || create_graph) {}

    // A root with its seed: a Var (create_graph differentiates through it),
    // else a tensor, else ones.
    static Root root(const Var& v, const Tensor* seed_tensor, const Var* seed_var) { return {v.node_, seed_tensor, seed_var}; }
    // targets: null for backward() (the gradients go into the leaves'
    // grad()); for grad(), results[i] receives inputs[i]'s gradient.
    void run(Roots roots, const Targets* targets, bool allow_unused);

private:
    // kToTargets: grad() (targets given) rather than backward(). A template
    // parameter, so backward()'s walk carries no test for it: at 1 x 128 the
    // walk's bookkeeping is a visible share of an op's cost.
    template <bool kToTargets>
    void run_as(Roots roots, const Targets* targets, bool allow_unused);
    template <bool kToTargets>
    void collect(Roots roots);
    void mark_wanted(const Targets& targets);
    template <bool kToTargets>
    void run_kernels(Roots roots, const Targets* targets);
    template <bool kToTargets>
    void run_graph(Roots roots, const Targets* targets);
    void run_graph_rule_on_values(Node& n);
    bool in_pass(const Node& n) const { return n.visit == visit_; }
    void finish(bool free_graph) noexcept;
    static Var adopt(Node* n) { return Var(n); }
    // Makes g part of the gradient `held` refers to (its first contribution,
    // or added to the earlier ones); `held` keeps one reference.
    static void add_to(Node*& held, const Var& g);

    Arena& a_;
    bool graph_, retain_;
    std::uint64_t visit_ = 0;
};

void Pass::add_to(Node*& held, const Var& g) {
    if (held == nullptr) {
        held = g.node_;
        add_ref(held);
        return;
    }
    Var total = add_gradients(adopt(held), g);  // adopts held's reference
    held = total.node_;
    add_ref(held);
}

// Every node the roots reach through gradient-requiring edges, latest
// first: inputs always come after the ops that use them.
// Inlined into run(): at 1 x 128 the walk's calls cost more than its work.
template <bool kToTargets>
[[gnu::always_inline]] inline void Pass::collect(Roots roots) {
    std::vector<Node*>& order = a_.order;
    std::vector<Node*>& pending = a_.pending;
    order.clear();
    pending.clear();
    visit_ = a_.next_visit++;
    for (const Root& r : roots) {
        if (r.node->visit != visit_) {
            r.node->visit = visit_;
            pending.push_back(r.node);
        }
    }
    while (!pending.empty()) {
        Node* n = pending.back();
        pending.pop_back();
        order.push_back(n);
        n->wanted = !kToTargets;  // backward(): all of it; grad() marks its own
        if (n->is_leaf) continue;
        if (n->graph_freed) throw_freed(*n);
        for (const Edge& e : n->inputs) {
            Node* in = e.node;
            if (in->requires_grad && in->visit != visit_) {
                in->visit = visit_;
                pending.push_back(in);
            }
        }
    }
    std::sort(order.begin(), order.end(), [](const Node* a, const Node* b) { return a->seq > b->seq; });
}

// grad(): the targets, and every op with an input that needs its gradient
// (found inputs first). (backward() marks every node while collecting.)
void Pass::mark_wanted(const Targets& targets) {
    std::vector<Node*>& order = a_.order;
    for (std::size_t i = 0; i < targets.count; ++i) {
        Node* t = targets.inputs[i].node_;
        if (in_pass(*t)) t->wanted = true;
    }
    for (auto it = order.rbegin(); it != order.rend(); ++it) {
        Node* n = *it;
        if (!n->wanted && runs(*n)) n->wanted = true;
    }
}

void Pass::run(Roots roots, const Targets* targets, bool allow_unused) {
    if (targets == nullptr) {
        run_as<false>(roots, targets, allow_unused);
    } else {
        run_as<true>(roots, targets, allow_unused);
    }
}

template <bool kToTargets>
void Pass::run_as(Roots roots, const Targets* targets, bool allow_unused) {
    for (const Root& r : roots) {
        check_owner(*r.node, "backward() through");
        if (!r.node->requires_grad) {
            throw std::logic_error(std::string("xgrad::backward: '") + r.node->op +
                                   "' does not require a gradient (no parameter reaches it, or it was computed under NoGrad)");
        }
    }
    try {
        collect<kToTargets>(roots);
        if constexpr (kToTargets) mark_wanted(*targets);
        if (kToTargets && !allow_unused) {
            for (std::size_t i = 0; i < targets->count; ++i) {
                if (!targets->inputs[i].node_->wanted) {
                    throw std::logic_error("xgrad::grad: input " + std::to_string(i) + " (a result of '" +
                                           targets->inputs[i].node_->op +
                                           "') is not used by the outputs; pass allow_unused to get an undefined Var for it");
                }
            }
        }
        // Checked before any gradient is written, so a refused pass adds nothing.
        for (Node* n : a_.order) {
            if (!n->is_leaf && (!kToTargets || runs(*n))) check_not_stale(*n);
        }
        if (graph_) {
            run_graph<kToTargets>(roots, targets);
        } else {
            run_kernels<kToTargets>(roots, targets);
        }
    } catch (...) {
        finish(false);
        throw;
    }
    finish(!retain_);
}

// Clears what the pass set on the nodes (also after an exception), and with
// `free_graph` releases what backward() no longer needs: the op nodes' saved
// tensors and state, and their inputs.
// Inlined into run(): at 1 x 128 the walk's calls cost more than its work.
[[gnu::always_inline]] inline void Pass::finish(bool free_graph) noexcept {
    std::vector<Node*>& order = a_.order;
    for (Node* n : order) {
        n->wanted = false;
        if (n->graph_grad != nullptr) drop(n->graph_grad);
        if (n->is_leaf) continue;
        a_.pool.release(n->grad);
        n->grad_written = false;
        if (!free_graph) continue;
        n->graph_freed = true;
        release_saved(a_, *n);
        n->index.clear();
        n->state.reset();
    }
    if (!free_graph) return;
    // All marked first, then the input references dropped (which may
    // recycle nodes that are still listed in `order`).
    for (Node* n : order) {
        // Moved out first: dropping a reference may recycle n itself.
        for (std::size_t i = n->inputs.size(); i-- > 0;) {
            Node* in = n->inputs[i].node;
            n->inputs.pop_back();
            drop_ref(in);
        }
    }
}

// ---- the ordinary pass: kernel rules on tensors -------------------------------

// Inlined into run(): at 1 x 128 the walk's calls cost more than its work.
template <bool kToTargets>
[[gnu::always_inline]] inline void Pass::run_kernels(Roots roots, const Targets* targets) {
    std::vector<Node*>& order = a_.order;
    if constexpr (!kToTargets) {
        // The history of grad_var() holds only while every contribution is recorded.
        for (Node* n : order) {
            if (n->is_leaf && n->grad_history != nullptr) drop_history(*n);
        }
    }
    // grad(): a leaf input's gradient goes into a buffer of its own, its grad() aside.
    std::vector<Tensor> aside;
    if constexpr (kToTargets) {
        for (std::size_t i = 0; i < targets->count; ++i) {
            Node* n = targets->inputs[i].node_;
            if (!n->is_leaf || !n->wanted) {
                aside.push_back(empty_tensor());
                continue;
            }
            aside.push_back(std::move(n->grad));
            n->grad = empty_tensor();
            a_.pool.acquire(n->grad, n->value.shape());
            n->grad.fill(0.f);
        }
    }
    const auto restore = [&] {
        if constexpr (kToTargets) {
            for (std::size_t i = 0; i < targets->count; ++i) {
                Node* n = targets->inputs[i].node_;
                if (!n->is_leaf || !n->wanted) continue;
                if (!targets->results[i].defined()) {
                    Node* r = new_node();
                    r->value = std::move(n->grad);
                    r->value_pooled = true;
                    targets->results[i] = adopt(r);
                } else {
                    a_.pool.release(n->grad);
                }
                n->grad = std::move(aside[i]);
            }
        }
    };
    try {
        for (const Root& r : roots) {
            Node& n = *r.node;
            if (!n.wanted) continue;
            if (n.is_leaf || n.grad_written) {  // add to what the leaf (or an earlier root) holds
                if (r.seed_tensor) {
                    n.grad += *r.seed_tensor;
                } else {
                    n.grad += 1.f;
                }
            } else {
                acquire_gradient(n);
                if (r.seed_tensor) {
                    xt::noalias(n.grad) = *r.seed_tensor;
                } else {
                    n.grad.fill(1.f);
                }
                n.grad_written = true;
            }
        }
        for (Node* n : order) {
            // An op whose output received no gradient contributes nothing.
            if (n->is_leaf || !n->grad_written || (kToTargets && !runs(*n))) continue;
            if (n->backward != nullptr) {
                BackwardContext ctx(*n);
                n->backward(ctx);
            } else {
                run_graph_rule_on_values(*n);
            }
            // Its gradient is spent (every op using it came earlier in the
            // order), so the next one can take its buffer. grad() keeps them
            // until the end: it returns those of the targets.
            if constexpr (!kToTargets) {
                a_.pool.release(n->grad);
                n->grad_written = false;
            }
        }
        if constexpr (kToTargets) {
            for (std::size_t i = 0; i < targets->count; ++i) {
                Node* n = targets->inputs[i].node_;
                if (n->is_leaf || !n->wanted) continue;
                Node* r = new_node();
                a_.pool.acquire(r->value, n->value.shape());
                r->value_pooled = true;
                if (n->grad_written) {
                    xt::noalias(r->value) = n->grad;
                } else {
                    r->value.fill(0.f);
                }
                targets->results[i] = adopt(r);
            }
        }
    } catch (...) {
        restore();
        throw;
    }
    restore();
}

// An op with only a differentiable rule, in an ordinary pass: the rule runs
// under NoGrad on a Var that borrows the node's gradient buffer, and its
// results' values are added to the inputs' gradients.
void Pass::run_graph_rule_on_values(Node& n) {
    Var dy = adopt(new_node());
    Node& borrowed = *dy.node_;
    std::swap(borrowed.value, n.grad);
    struct GiveBack {
        Node &from, &to;
        ~GiveBack() { std::swap(from.value, to.grad); }
    } give_back{borrowed, n};
    NoGrad no_grad;
    GraphContext ctx(n, dy, false);
    n.graph(ctx);
}

// ---- the recorded pass: differentiable rules on Vars --------------------------

template <bool kToTargets>
void Pass::run_graph(Roots roots, const Targets* targets) {
    for (const Root& r : roots) {
        Node& n = *r.node;
        if (!n.wanted) continue;
        Var seed = r.seed_var ? *r.seed_var : r.seed_tensor ? Var(Tensor(*r.seed_tensor)) : Var::full(n.value.shape(), 1.f);
        add_to(n.graph_grad, seed);
    }
    for (Node* n : a_.order) {
        if (n->graph_grad == nullptr) continue;
        if (n->is_leaf) {
            if (kToTargets) continue;  // returned below
            // grad_var() = what grad() held before (a constant) + this pass's gradient.
            const Var g = Var::shared(n->graph_grad);
            if (n->grad_history == nullptr) add_to(n->grad_history, Var(Tensor(n->grad)));
            add_to(n->grad_history, g);
            n->grad += g.value();
            continue;
        }
        if (!runs(*n)) continue;
        if (n->graph == nullptr) {
            throw std::logic_error(std::string("xgrad::") + n->op +
                                   ": not twice differentiable (it has no differentiable rule, and create_graph reached it)");
        }
        GraphContext ctx(*n, Var::shared(n->graph_grad), true);
        n->graph(ctx);
    }
    if constexpr (kToTargets) {
        for (std::size_t i = 0; i < targets->count; ++i) {
            Node* n = targets->inputs[i].node_;
            if (in_pass(*n) && n->graph_grad != nullptr) targets->results[i] = Var::shared(n->graph_grad);
        }
    }
}

// ---- the public entry points ----------------------------------------------------

namespace {

void run_backward(const Var& root, const Tensor* seed, const BackwardOptions& options) {
    const Tensor& value = root.value();
    if (seed == nullptr && value.size() != 1) {
        throw ShapeError("xgrad::backward: the root must hold one element, got " + shape_string(value) + " from '" +
                         root.op_name() + "'; for another shape pass its gradient: backward(root, grad)");
    }
    if (seed != nullptr && seed->shape() != value.shape()) {
        throw ShapeError("xgrad::backward: the gradient " + shape_string(*seed) + " does not have the root's shape " +
                         shape_string(value) + " ('" + root.op_name() + "')");
    }
    const Root only = Pass::root(root, seed, nullptr);
    Pass(options.create_graph, options.retain_graph).run(Roots{&only, 1}, nullptr, false);
}

}  // namespace

}  // namespace detail

void backward(const Var& root, const BackwardOptions& options) { detail::run_backward(root, nullptr, options); }
void backward(const Var& root, const Tensor& grad, const BackwardOptions& options) { detail::run_backward(root, &grad, options); }

namespace {

void check_seed_count(std::size_t outputs, const GradOptions& options) {
    if (outputs == 0) throw std::invalid_argument("xgrad::grad: no outputs");
    const std::size_t seeds = options.grad_outputs.size();
    if (seeds != 0 && seeds != outputs) {
        throw std::invalid_argument("xgrad::grad: " + std::to_string(seeds) + " grad_outputs for " + std::to_string(outputs) +
                                    " outputs");
    }
}

// Output k of grad() with its seed, checked.
detail::Root checked_root(const Var& y, std::size_t k, const GradOptions& options) {
    const std::vector<Var>& seeds = options.grad_outputs;
    if (!y.defined()) throw std::logic_error("xgrad::grad: output " + std::to_string(k) + " is an empty Var");
    if (seeds.empty()) {
        if (y.numel() != 1) {
            throw ShapeError("xgrad::grad: output " + std::to_string(k) + " " + shape_string(y.shape()) +
                             " holds more than one element: give its gradient in grad_outputs");
        }
        return detail::Pass::root(y, nullptr, nullptr);
    }
    if (!seeds[k].defined() || seeds[k].shape() != y.shape()) {
        throw ShapeError("xgrad::grad: grad_outputs[" + std::to_string(k) + "] " +
                         (seeds[k].defined() ? shape_string(seeds[k].shape()) : std::string("(empty)")) +
                         " does not have the shape of output " + std::to_string(k) + " " + shape_string(y.shape()));
    }
    return detail::Pass::root(y, &seeds[k].value(), &seeds[k]);
}

void check_inputs(const Var* inputs, std::size_t count) {
    for (std::size_t i = 0; i < count; ++i) {
        if (!inputs[i].defined()) throw std::logic_error("xgrad::grad: input " + std::to_string(i) + " is an empty Var");
        if (!inputs[i].requires_grad()) {
            throw std::logic_error("xgrad::grad: input " + std::to_string(i) + " (a result of '" + inputs[i].op_name() +
                                   "') does not require a gradient");
        }
    }
}

}  // namespace

std::vector<Var> grad(const std::vector<Var>& outputs, const std::vector<Var>& inputs, const GradOptions& options) {
    check_seed_count(outputs.size(), options);
    std::vector<detail::Root> roots;
    roots.reserve(outputs.size());
    for (std::size_t k = 0; k < outputs.size(); ++k) roots.push_back(checked_root(outputs[k], k, options));
    check_inputs(inputs.data(), inputs.size());
    std::vector<Var> results(inputs.size());
    const detail::Targets targets{inputs.data(), results.data(), inputs.size()};
    detail::Pass(options.create_graph, options.retain_graph)
        .run(detail::Roots{roots.data(), roots.size()}, &targets, options.allow_unused);
    return results;
}

std::vector<Var> grad(const Var& output, const std::vector<Var>& inputs, const GradOptions& options) {
    return grad(std::vector<Var>{output}, inputs, options);
}

// The same for one output and one input, without allocating (a gradient
// penalty in every training step).
Var grad(const Var& output, const Var& input, const GradOptions& options) {
    check_seed_count(1, options);
    const detail::Root root = checked_root(output, 0, options);
    check_inputs(&input, 1);
    Var result;
    const detail::Targets targets{&input, &result, 1};
    detail::Pass(options.create_graph, options.retain_graph).run(detail::Roots{&root, 1}, &targets, options.allow_unused);
    return result;
}

}  // namespace xgrad
