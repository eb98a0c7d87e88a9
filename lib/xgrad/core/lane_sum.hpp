// A fast and accurate sum for reductions inside kernels (batch and layer
// norm, bias gradients): no xtensor, so raw-pointer kernels can use it too.
#pragma once

#include <algorithm>
#include <cstddef>

namespace xgrad {

// The sum of term(i) for i in [0, n). A double running sum makes every
// addition wait for the previous one (~4 cycles a term); here float partial
// sums in 8 lanes, which the compiler vectorizes, cover stretches of at most
// 512 terms and are combined in double, so a long sum still keeps ~1e-7
// relative accuracy.
template <class Term>
double lane_sum(std::size_t n, const Term& term) {
    double total = 0.0;
    std::size_t i = 0;
    while (i < n) {
        const std::size_t end = std::min(n, i + 512);
        float lane[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
        for (; i + 8 <= end; i += 8) {
            for (std::size_t j = 0; j < 8; ++j) lane[j] += term(i + j);
        }
        for (; i < end; ++i) lane[0] += term(i);
        total += double((lane[0] + lane[1]) + (lane[2] + lane[3])) + double((lane[4] + lane[5]) + (lane[6] + lane[7]));
    }
    return total;
}

}  // namespace xgrad
