// Var, the tape and backward(): the autograd core of xgrad.
//
// A Var is a reference-counted handle to a node. A leaf node holds a value
// the user owns (a parameter, an input batch, a buffer such as running
// statistics); an op node holds an op's evaluated output plus what its
// backward rule needs: its inputs, saved tensors, typed state and the rule
// itself (see op.hpp). Nodes reference their inputs, so a graph stays alive
// exactly as long as some Var reaches it, and parameters (leaves) are shared
// by as many graphs as use them.
//
// Gradients: backward(loss) adds d loss / d leaf into leaf.grad() for every
// leaf that requires a gradient. They accumulate across calls until
// zero_grad(). backward() then frees the graph it walked (op nodes drop
// their inputs), so a second backward() through the same graph throws;
// pass retain_graph = true in BackwardOptions to walk it again (leaf
// gradients add up twice, as in PyTorch). grad(outputs, inputs) returns
// d outputs / d inputs instead, touching no leaf's grad().
//
// Higher order: with create_graph the backward pass is itself recorded, so
// the gradients it gives (grad()'s results, a leaf's grad_var()) are Vars
// with history that can be differentiated again, to any order. Each op has
// a fast kernel rule for the ordinary backward and a differentiable rule
// written with ops for this (op.hpp); an op without one throws
// "xgrad::<op>: not twice differentiable" when create_graph reaches it.
//
// Threads: a graph belongs to the thread that built it. Using a Var on
// another thread, or after the thread that created it has exited, is an
// error that xgrad reports: copying it, computing with it, changing it or
// running backward through it throws std::logic_error; destroying it (which
// cannot throw) prints a message and aborts.
// xgrad's own threads (parallel.hpp) work inside one op and never touch Vars.
#pragma once

#include <cstdint>
#include <new>
#include <utility>
#include <vector>

#include <xgrad/core/tensor.hpp>

namespace xgrad {

class BackwardContext;
class GraphContext;
// Backward rules are plain function pointers (capture-free lambdas): storing
// one allocates nothing. What a rule needs beyond inputs and output travels
// in the node: saved tensors, typed state, an index list (see op.hpp).
// A kernel rule works on tensors; a differentiable (graph) rule on Vars.
using BackwardFn = void (*)(BackwardContext&);
using GraphFn = void (*)(GraphContext&);

namespace detail {

struct Arena;
struct Node;

struct Edge {
    Node* node;
    std::uint64_t version;  // the input's version when the op used it
};

// Typed per-op state kept inline in the node (no allocation): any type of
// up to kBytes bytes; its destructor runs when the node is recycled.
class OpState {
public:
    static constexpr std::size_t kBytes = 256;
    OpState() = default;
    OpState(const OpState&) = delete;
    OpState& operator=(const OpState&) = delete;
    ~OpState() { reset(); }

    template <class T, class... Args>
    T& emplace(Args&&... args);
    template <class T>
    T& get(const char* op);
    void reset() noexcept;

private:
    template <class T>
    static inline const char tag = 0;  // one address per type: a cheap type check
    alignas(16) unsigned char bytes_[kBytes];
    void (*destroy_)(void*) = nullptr;
    const void* type_ = nullptr;
    [[noreturn]] static void throw_mismatch(const char* op);
};

struct Node {
    Tensor value = empty_tensor();
    Tensor grad = empty_tensor();  // leaf: persistent; op node: from the pool while backward needs it
    std::vector<Tensor> saved;     // tensors an op keeps for its backward: the first saved_count hold storage
    std::size_t saved_count = 0;
    std::vector<Edge> inputs;        // capacity kept across reuse: no allocation in steady state
    std::vector<std::size_t> index;  // an op's integer list (arg-max positions, gathered rows)
    OpState state;
    const char* op = "leaf";
    BackwardFn backward = nullptr;  // the kernel rule; null when the graph rule serves both
    GraphFn graph = nullptr;        // the differentiable rule; null: the op is once differentiable
    Node* graph_grad = nullptr;     // during a create_graph pass: the gradient so far, as a Var's node (one reference)
    Node* grad_history = nullptr;   // leaf: grad() as a Var with history after backward(create_graph) (one reference)
    Arena* arena = nullptr;         // the owning thread's storage
    std::uint64_t seq = 0;          // creation order: inputs always have a smaller seq
    std::uint64_t version = 0;      // bumped whenever a leaf's value is changed in place
    std::uint64_t visit = 0;        // stamp of the backward pass that last reached the node
    int refs = 0;
    bool is_leaf = true;
    bool requires_grad = false;
    bool graph_freed = false;   // backward() already released this op's inputs
    bool grad_written = false;  // op node: grad holds data (else it is all zeros, never stored)
    bool wanted = false;        // during a pass: its gradient is needed (all it reaches; for grad(), what leads to an input)
    bool value_pooled = false;  // value came from the pool and goes back to it (a user's tensor does not)
};

Node* new_node();
// An op node's gradient buffer, from the pool, uninitialised: a backward
// pass takes it when the first contribution arrives and gives it back once
// the node's rule has run, so only the gradients between the two are held.
void acquire_gradient(Node& n);
void add_ref(Node* n);  // throws std::logic_error for a node of another thread
void drop_ref(Node* n) noexcept;
// Throws std::logic_error naming `what` (and the op using it) unless n
// belongs to this thread.
void check_owner(const Node& n, const char* what, const char* using_op = nullptr);

}  // namespace detail

struct BackwardOptions {
    // Keep the graph so backward() can walk it again.
    bool retain_graph = false;
    // Record the backward pass: each leaf's grad_var() then has history and
    // can be differentiated again. Implies retain_graph.
    bool create_graph = false;
};

class Var;
namespace detail {
class Pass;
}

class Var {
public:
    Var() = default;
    // A leaf holding `value`. A leaf that requires a gradient is a parameter.
    explicit Var(Tensor value, bool requires_grad = false);
    // A leaf of `shape` filled with `fill`. Throws std::length_error for a
    // shape whose element count overflows.
    static Var full(const Shape& shape, float fill, bool requires_grad = false);
    static Var zeros(const Shape& shape, bool requires_grad = false) { return full(shape, 0.f, requires_grad); }
    // A rank-0 leaf.
    static Var scalar(float value, bool requires_grad = false);

    // Copying a Var of another thread throws std::logic_error.
    Var(const Var& other);
    Var(Var&& other) noexcept;
    Var& operator=(const Var& other);
    Var& operator=(Var&& other) noexcept;
    ~Var();

    bool defined() const { return node_ != nullptr; }
    const Tensor& value() const;
    const Shape& shape() const { return value().shape(); }
    std::size_t dim() const { return value().dimension(); }
    std::size_t numel() const { return value().size(); }
    // The value of a one-element Var (rank 0, or any shape of size 1).
    float item() const;

    bool is_leaf() const;
    bool requires_grad() const;
    // Leaves only: freezing a parameter (false) makes every op skip its
    // gradient, so a frozen parameter costs nothing in backward.
    void set_requires_grad(bool requires);
    // Leaves only: the accumulated gradient (zeros until a backward reaches it).
    const Tensor& grad() const;
    // Leaves only: the same gradient as a Var. After backward() with
    // create_graph it has that pass's history (as PyTorch's x.grad), as
    // long as every contribution since zero_grad() was recorded so; else it
    // is a new leaf holding a copy of grad(). The history refers back to
    // this leaf (as in PyTorch): zero_grad() releases it.
    Var grad_var() const;
    // Leaves only: write access to the gradient (gradient clipping, averaging
    // across processes). Its shape must not change.
    Tensor& mutable_grad();
    void zero_grad();

    // Leaves only: write access to the value. Marks the value as changed, so
    // a graph recorded before the change refuses to run backward with it.
    // Its shape must not change.
    Tensor& mutable_value();
    // Incremented by every mutable_value() call.
    std::uint64_t version() const;

    // A new leaf holding a copy of the value and no history.
    Var detach() const;
    // Name of the op that produced this Var ("leaf" for leaves).
    const char* op_name() const;

private:
    explicit Var(detail::Node* adopted) noexcept : node_(adopted) {}
    detail::Node& node() const;
    detail::Node& leaf_node(const char* what) const;

    // A Var sharing n (one more reference).
    static Var shared(detail::Node* n);

    detail::Node* node_ = nullptr;
    friend class Op;
    friend class GraphContext;
    friend class detail::Pass;
};

// Accumulates d root / d leaf into the grad() of every leaf reachable from
// `root` that requires a gradient. `root` must hold one element.
void backward(const Var& root, const BackwardOptions& options = {});
// The same for a root of any shape, seeded with d loss / d root = `grad`
// (of root's shape): the vector-Jacobian product.
void backward(const Var& root, const Tensor& grad, const BackwardOptions& options = {});

struct GradOptions {
    // d loss / d output for each output (its shape; a Var with history is
    // differentiated through too). Empty: ones, which needs one-element outputs.
    std::vector<Var> grad_outputs;
    // Record the pass: the results have history (gradient penalties,
    // Hessian-vector products). Implies retain_graph.
    bool create_graph = false;
    bool retain_graph = false;
    // An input that no output depends on gets an undefined Var (instead of an error).
    bool allow_unused = false;
};

// d outputs / d inputs: sum_k grad_outputs[k] . d outputs[k] / d inputs[i]
// for each input i (leaves that require a gradient, or any Var of the
// graph), as in torch.autograd.grad. No leaf's grad() changes, and only the
// part of the graph that leads from the inputs to the outputs is walked.
std::vector<Var> grad(const std::vector<Var>& outputs, const std::vector<Var>& inputs, const GradOptions& options = {});
std::vector<Var> grad(const Var& output, const std::vector<Var>& inputs, const GradOptions& options = {});
Var grad(const Var& output, const Var& input, const GradOptions& options = {});

// While a NoGrad object lives on this thread, ops record no graph: their
// results are plain values (as for evaluation or for a GAN's fake batch in
// the discriminator step).
class NoGrad {
public:
    NoGrad();
    ~NoGrad();
    NoGrad(const NoGrad&) = delete;
    NoGrad& operator=(const NoGrad&) = delete;
};
bool grad_enabled();

// While a FreezeGuard lives, the given parameters require no gradient
// (backward skips all work only they would need; optimizers leave them
// alone); each gets its previous setting back at the end. A GAN's generator
// step freezes the discriminator this way. It keeps a reference to the list,
// which must outlive it; for up to 64 parameters it allocates nothing.
class FreezeGuard {
public:
    explicit FreezeGuard(const std::vector<Var>& parameters);
    ~FreezeGuard();  // NOLINT(bugprone-exception-escape): see var.cpp
    FreezeGuard(const FreezeGuard&) = delete;
    FreezeGuard& operator=(const FreezeGuard&) = delete;

private:
    const std::vector<Var>& parameters_;
    xt::svector<bool, 64> was_requiring_;
};

// Sets requires_grad on each of `parameters` (leaves).
void set_requires_grad(const std::vector<Var>& parameters, bool requires);

// The pool behind every op result on this thread (exposed for benchmarks and
// the scratch buffers of op.hpp).
TensorPool& tensor_pool();

// ---- implementation of the inline state -------------------------------------

namespace detail {

template <class T, class... Args>
T& OpState::emplace(Args&&... args) {
    static_assert(sizeof(T) <= kBytes, "op state too large: keep big data in saved tensors or the index list");
    static_assert(alignof(T) <= 16, "op state alignment above 16 bytes");
    reset();
    T* p = new (bytes_) T(std::forward<Args>(args)...);
    destroy_ = [](void* q) { static_cast<T*>(q)->~T(); };
    type_ = &tag<T>;
    return *p;
}

template <class T>
T& OpState::get(const char* op) {
    if (type_ != &tag<T>) throw_mismatch(op);
    return *std::launder(reinterpret_cast<T*>(bytes_));
}

}  // namespace detail

}  // namespace xgrad
