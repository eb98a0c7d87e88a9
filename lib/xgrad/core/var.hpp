// Var, the tape and backward(): the autograd core of xgrad.
//
// A Var is a reference-counted handle to a node. A leaf node holds a value
// the user owns (a parameter, an input batch); an op node holds an op's
// evaluated output plus what its backward rule needs: its inputs and the
// rule itself (see op.hpp). Nodes reference their inputs, so a graph stays
// alive exactly as long as some Var reaches it, and parameters (leaves) are
// shared by as many graphs as use them.
//
// Gradients: backward(loss) adds d loss / d leaf into leaf.grad() for every
// leaf that requires a gradient. They accumulate across calls until
// zero_grad(). backward() then frees the graph it walked (op nodes drop
// their inputs), so a second backward() through the same graph throws;
// pass retain_graph = true in BackwardOptions to walk it again (leaf gradients add up
// twice, as in PyTorch).
//
// Threads: a graph belongs to the thread that built it; xgrad's own threads
// (parallel.hpp) or OpenBLAS's may work inside one op.
#pragma once

#include <array>
#include <cstdint>

#include <xgrad/core/tensor.hpp>

namespace xgrad {

class BackwardContext;
// Backward rules are plain function pointers (capture-free lambdas): storing
// one allocates nothing. Per-op constants travel in the node's attributes.
using BackwardFn = void (*)(BackwardContext&);

namespace detail {

inline constexpr int kMaxInputs = 3;

struct Node {
    Tensor value;
    Tensor grad;   // leaf: persistent; op node: borrowed from the pool during backward
    Tensor saved;  // an extra buffer an op keeps for its backward (e.g. a mask)
    const char* op = "leaf";
    BackwardFn backward = nullptr;
    std::array<Node*, kMaxInputs> inputs{};
    std::array<std::uint64_t, kMaxInputs> input_versions{};
    int num_inputs = 0;
    std::array<float, 2> attrs{};
    std::uint64_t seq = 0;      // creation order: inputs always have a smaller seq
    std::uint64_t version = 0;  // bumped whenever a leaf's value is changed in place
    std::uint64_t visit = 0;    // stamp of the backward pass that last reached the node
    int refs = 0;
    bool is_leaf = true;
    bool requires_grad = false;
    bool graph_freed = false;  // backward() already released this op's inputs
    bool grad_written = false; // op node: grad holds data (else it is all zeros, never stored)
    bool value_pooled = false; // value came from the pool and goes back to it (a user's tensor does not)
};

Node* new_node();
void add_ref(Node* n) noexcept;
void drop_ref(Node* n) noexcept;

}  // namespace detail

class Var {
public:
    Var() = default;
    // A leaf holding `value`. A leaf that requires a gradient is a parameter.
    explicit Var(Tensor value, bool requires_grad = false);
    // A rows x cols leaf filled with `fill`.
    static Var full(std::size_t rows, std::size_t cols, float fill, bool requires_grad = false);

    Var(const Var& other) noexcept;
    Var(Var&& other) noexcept;
    Var& operator=(const Var& other) noexcept;
    Var& operator=(Var&& other) noexcept;
    ~Var();

    bool defined() const { return node_ != nullptr; }
    const Tensor& value() const;
    Shape shape() const { return shape_of(value()); }
    std::size_t rows() const { return value().shape()[0]; }
    std::size_t cols() const { return value().shape()[1]; }
    // The value of a 1 x 1 Var.
    float item() const;

    bool is_leaf() const;
    bool requires_grad() const;
    // Leaves only: freezing a parameter (false) makes every op skip its
    // gradient, so a frozen parameter costs nothing in backward.
    void set_requires_grad(bool requires);
    // Leaves only: the accumulated gradient (zeros until a backward reaches it).
    const Tensor& grad() const;
    void zero_grad();

    // Leaves only: write access to the value. Marks the value as changed, so
    // a graph recorded before the change refuses to run backward with it.
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

    detail::Node* node_ = nullptr;
    friend class Op;
    friend void backward(const Var&, const struct BackwardOptions&);
};

struct BackwardOptions {
    // Keep the graph so backward() can walk it again.
    bool retain_graph = false;
};

// Accumulates d root / d leaf into the grad() of every leaf reachable from
// `root` that requires a gradient. `root` must be a 1 x 1 Var.
void backward(const Var& root, const BackwardOptions& options = {});

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

// The pool behind every op result on this thread (exposed for benchmarks).
TensorPool& tensor_pool();

}  // namespace xgrad
