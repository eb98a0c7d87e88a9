// Threads inside one op: xgrad splits large matrix products by rows of the
// result (each block one single-threaded BLAS call) and its optimizers'
// updates by element ranges, over a small pool of worker threads.
//
// Why not OpenBLAS's own threads: on a GAN's small products (128 x 784 x 128)
// they gained 0.8-1.5x on 2 cores; row blocks gained 1.6-2x. So xgrad keeps
// OpenBLAS at one thread, from its first op on: both at once would
// oversubscribe the cores.
//
// Blocks are claimed by whichever thread is free, the caller included: when
// another process holds the other core, the caller runs the blocks itself
// instead of waiting for a worker to be scheduled.
#pragma once

#include <chrono>
#include <cstddef>

namespace xgrad {

// Threads for xgrad's own work, the calling thread included. 1 (the
// default) runs everything on the calling thread. Process-wide; call it
// while no op runs (before training, say). Throws std::invalid_argument
// unless 1 <= n <= 65535.
void set_num_threads(int n);
int num_threads();

namespace detail {
// How long the pool runs jobs inline after a worker was late, given the
// time since the previous backoff ended and that backoff's length: short
// for a first hiccup, doubling while lateness recurs (parallel.cpp says why).
std::chrono::nanoseconds next_backoff(std::chrono::nanoseconds since_last_end, std::chrono::nanoseconds last);

using BlockFn = void (*)(const void* f, std::size_t begin, std::size_t end);
void run_blocks(std::size_t n, std::size_t blocks, BlockFn fn, const void* f);
}  // namespace detail

// The fewest elements a block of elementwise work (a map, a copy, a fill)
// gets: xgrad's splits use this one figure, so that every pass divides alike.
constexpr std::size_t kBlockElements = 16384;
// parallel_for's grain over items of `elements_each` elements each (rows,
// planes, channels): as many items as hold kBlockElements, one at least.
constexpr std::size_t items_per_block(std::size_t elements_each) {
    return elements_each >= kBlockElements ? 1 : kBlockElements / (elements_each > 0 ? elements_each : 1);
}

// Calls f(begin, end) on disjoint blocks covering [0, n), on up to
// num_threads() threads, and returns when all are done. Blocks are at least
// `grain` long (one block when n < 2 * grain); they depend only on n, grain
// and num_threads(), so results are reproducible for a given thread count.
// f must not throw; a parallel_for inside f runs its blocks inline.
// Allocates nothing.
template <class F>
void parallel_for(std::size_t n, std::size_t grain, const F& f) {
    const std::size_t threads = static_cast<std::size_t>(num_threads());
    const std::size_t most = grain == 0 ? n : n / grain;
    const std::size_t blocks = most < threads ? most : threads;
    if (blocks <= 1) {
        f(std::size_t{0}, n);
        return;
    }
    detail::run_blocks(
        n, blocks, [](const void* g, std::size_t begin, std::size_t end) { (*static_cast<const F*>(g))(begin, end); }, &f);
}

}  // namespace xgrad
