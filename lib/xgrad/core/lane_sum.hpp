// A fast and accurate sum for reductions inside kernels (batch and layer
// norm, the convolutions' bias gradients): no xtensor, so raw-pointer
// kernels can use it too.
#pragma once

#include <algorithm>
#include <cstddef>

namespace xgrad {

namespace detail {
// Four float lanes as one value of GCC's and clang's vector extension, the
// width of an SSE register (the x86-64 baseline), so that the compiler keeps
// them in a register. As an array of eight floats, GCC 12 added one lane at
// a time with shuffles between; as one value of eight lanes, it stored them
// to memory after every addition.
using Quad = float __attribute__((vector_size(4 * sizeof(float))));
}  // namespace detail

// The sum of term(i) for i in [0, n). A double running sum makes every
// addition wait for the previous one (~4 cycles a term); here float partial
// sums in 8 lanes (lane i % 8) cover stretches of at most 512 terms, the
// terms after the last full eight going to lane 0, and are combined in
// double, so a long sum still keeps ~1e-7 relative accuracy.
template <class Term>
double lane_sum(std::size_t n, const Term& term) {
    using detail::Quad;
    double total = 0.0;
    for (std::size_t i = 0; i < n;) {
        const std::size_t end = std::min(n, i + 512);
        Quad low = {}, high = {};  // lanes 0-3 and 4-7
        for (; i + 8 <= end; i += 8) {
            low += Quad{term(i), term(i + 1), term(i + 2), term(i + 3)};
            high += Quad{term(i + 4), term(i + 5), term(i + 6), term(i + 7)};
        }
        for (; i < end; ++i) low[0] += term(i);
        total += double((low[0] + low[1]) + (low[2] + low[3])) + double((high[0] + high[1]) + (high[2] + high[3]));
    }
    return total;
}

}  // namespace xgrad
