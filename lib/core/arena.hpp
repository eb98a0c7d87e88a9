// Internal to lib/core: the per-thread storage behind all Vars, shared by
// the tape (var.cpp) and the op-authoring API (op.cpp).
#pragma once

#include <cstdint>
#include <deque>
#include <vector>

#include <xgrad/core/var.hpp>

namespace xgrad::detail {

// Nodes are recycled through a free list and tensor storage through the
// pool, and the backward pass reuses its work lists, so a steady-state
// training step allocates nothing.
struct Arena {
    std::deque<Node> nodes;  // a deque never moves its elements
    std::vector<Node*> free_nodes;
    TensorPool pool;
    std::uint64_t next_seq = 1;
    std::uint64_t next_visit = 1;
    int no_grad_depth = 0;
    std::size_t live = 0;  // nodes some Var or op still refers to
    std::vector<Node*> releasing, order, pending;
};

// The arena of the running thread, created on first use.
Arena& arena();

// Storage for one more saved tensor of node n, of `shape` (the tensors stay
// in n.saved across reuse; only their storage comes and goes).
Tensor& add_saved(Node& n, const Shape& shape);
// Gives back the saved tensors' storage.
inline void release_saved(Arena& a, Node& n) noexcept {
    for (std::size_t k = 0; k < n.saved_count; ++k) a.pool.release(n.saved[k]);
    n.saved_count = 0;
}
// Drops a leaf's gradient history (Var::grad_var), if it has one.
void drop_history(Node& n) noexcept;

}  // namespace xgrad::detail
