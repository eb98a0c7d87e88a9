// The numeric kernels ops are built from: matrix products through CBLAS,
// elementwise work split over xgrad's threads, and the two broadcasting
// kernels that are each other's adjoint (sum a tensor down to a broadcast
// shape; expand a tensor up to one). Forward code and backward rules use
// them alike; none allocates.
#pragma once

#include <array>
#include <cstddef>

#include <xtensor/xadapt.hpp>
#include <xtensor/xnoalias.hpp>

#include <xgrad/core/lane_sum.hpp>
#include <xgrad/core/parallel.hpp>
#include <xgrad/core/tensor.hpp>

namespace xgrad {

// A row-major matrix over someone else's storage (rows x cols, row stride cols).
struct ConstMatrix {
    const float* data;
    std::size_t rows, cols;
};
struct Matrix {
    float* data;
    std::size_t rows, cols;
    operator ConstMatrix() const { return {data, rows, cols}; }  // NOLINT(google-explicit-constructor): as T* to const T*
};

// t as a matrix whose rows run over all but its last dimension:
// (..., n) -> (numel / n, n); rank 1 (n) -> (1, n); rank 0 -> (1, 1).
ConstMatrix as_matrix(const Tensor& t);
Matrix as_matrix(Tensor& t);

// c = op(a) . op(b) + beta c through CBLAS (sgemv when c is a single row or
// column), transposing on the fly; large products are split by rows of c
// over xgrad's threads (parallel.hpp). Checks every shape first (BLAS itself
// would write past a too-small c); `op` goes into the error message.
void gemm(const char* op, ConstMatrix a, bool transpose_a, ConstMatrix b, bool transpose_b, Matrix c, float beta = 0.f);
// The same product over raw row-major storage whose rows lie lda, ldb and
// ldc floats apart (blocks of larger buffers, as the convolution engine
// uses): c (m x n) = op(a) (m x k) . op(b) (k x n) + beta c. The caller
// vouches for the sizes; nothing is checked.
void gemm(bool transpose_a, bool transpose_b, std::size_t m, std::size_t n, std::size_t k, const float* a, std::size_t lda,
          const float* b, std::size_t ldb, float beta, float* c, std::size_t ldc);

// dst = scale * src summed over the dimensions in which dst broadcasts to
// src (dst's shape, aligned at the last dimension, has 1 or nothing where
// src has more), or dst += that when `accumulate`. Long sums run in double.
// Throws ShapeError naming `op` when dst's shape does not broadcast to src's.
void sum_to(const char* op, const float* src, const Shape& src_shape, float* dst, const Shape& dst_shape, bool accumulate,
            float scale = 1.f);
inline void sum_to(const char* op, const Tensor& src, Tensor& dst, bool accumulate, float scale = 1.f) {
    sum_to(op, src.data(), src.shape(), dst.data(), dst.shape(), accumulate, scale);
}
// dst = scale * src broadcast to dst's shape, or dst += that when
// `accumulate`: the adjoint of sum_to. Throws ShapeError naming `op` when
// src's shape does not broadcast to dst's.
void expand_to(const char* op, const float* src, const Shape& src_shape, float* dst, const Shape& dst_shape, bool accumulate,
               float scale = 1.f);
inline void expand_to(const char* op, const Tensor& src, Tensor& dst, bool accumulate, float scale = 1.f) {
    expand_to(op, src.data(), src.shape(), dst.data(), dst.shape(), accumulate, scale);
}

// A tensor seen as (outer, n, inner) around one axis of size n: element
// (o, j, i) sits at (o * n + j) * inner + i.
struct AxisLanes {
    std::size_t outer = 1, n = 1, inner = 1;
};
AxisLanes lanes_around(const Shape& shape, std::size_t axis);

namespace detail {
// Elements [begin, end) of t as a 1-D expression over its storage (no copy).
inline auto elements(Tensor& t, std::size_t begin, std::size_t end) {
    return xt::adapt(t.data() + begin, end - begin, xt::no_ownership(), std::array<std::size_t, 1>{end - begin});
}
inline auto elements(const Tensor& t, std::size_t begin, std::size_t end) {
    return xt::adapt(t.data() + begin, end - begin, xt::no_ownership(), std::array<std::size_t, 1>{end - begin});
}
}  // namespace detail

// out = f(in...) elementwise, for ops with costly elements (exp, log,
// tanh): f(out, in...) assigns an expression over 1-D views of one range of
// elements, and large tensors are split into ranges over xgrad's threads.
// All tensors hold the same number of elements (any shapes).
//   parallel_elementwise(op.out(), [](auto& y, const auto& x) { xt::noalias(y) = xt::exp(x); }, x.value());
template <class F, class... In>
void parallel_elementwise(Tensor& out, const F& f, const In&... in) {
    parallel_for(out.size(), kBlockElements, [&](std::size_t begin, std::size_t end) {
        auto range = detail::elements(out, begin, end);
        f(range, detail::elements(in, begin, end)...);
    });
}

}  // namespace xgrad
