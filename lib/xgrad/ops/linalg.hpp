// Linear algebra (lib/ops/linalg.cpp): BLAS products with the transposes of
// the gradient formulas done on the fly (no transposed copies).
#pragma once

#include <xgrad/core/var.hpp>

namespace xgrad {

// Matrix product with NumPy's matmul rules:
//   a (..., M, K) . b (K, N)  -> (..., M, N)  one GEMM over all leading rows
//   a (..., K)    . b (K)     -> (...)        (a vector b: one GEMV)
//   a (K)         . b (K, N)  -> (N)
//   a (B..., M, K) . b (B..., K, N) -> (B..., M, N), a GEMM per batch
//     (equal batch shapes; a 2-D a is shared by every batch of b).
// da = dy . b^T,  db = a^T . dy.
Var matmul(const Var& a, const Var& b);
// x (..., I) . w^T + b (O) -> (..., O) for w (O, I), PyTorch's layout
// (F.linear), one fused op and one GEMM that reads w transposed in place;
// `b` may be an empty Var (no bias). dx = dy . w, dw = dy^T . x (all
// leading rows together), db = dy summed over the leading dimensions.
Var linear(const Var& x, const Var& w, const Var& b);

}  // namespace xgrad
