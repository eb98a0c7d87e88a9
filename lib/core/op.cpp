#include <xgrad/core/op.hpp>

#include <algorithm>
#include <string>

#include <xtensor-blas/xblas.hpp>

#include <xgrad/core/parallel.hpp>

namespace xgrad {

void gemm_into(const char* op_name, const Tensor& a, bool transpose_a, const Tensor& b, bool transpose_b, Tensor& c,
               float beta) {
    const std::size_t m = a.shape()[transpose_a ? 1 : 0], k = a.shape()[transpose_a ? 0 : 1];
    const std::size_t kb = b.shape()[transpose_b ? 1 : 0], n = b.shape()[transpose_b ? 0 : 1];
    if (k != kb || c.shape()[0] != m || c.shape()[1] != n) {
        throw ShapeError(std::string("xgrad::") + op_name + ": cannot multiply " + shape_string(a) + (transpose_a ? "^T" : "") +
                         " by " + shape_string(b) + (transpose_b ? "^T" : "") + " into " + shape_string(c));
    }
    if (c.size() == 0) return;
    if (k == 0) {  // BLAS leaves c untouched when there is nothing to sum
        if (beta == 0.f) {
            c.fill(0.f);  // c may hold leftovers (even NaN) from the pool
        } else {
            c *= beta;
        }
        return;
    }
    if (m == 1 || n == 1) {
        // A matrix-vector product goes to gemv, the BLAS kernel for that
        // shape: OpenBLAS's small-matrix sgemm kernels (0.3.21, SkylakeX)
        // malloc a scratch buffer on every such call. Either c = op(a) . b
        // with b a vector, or c^T = op(b)^T . a^T with a a vector.
        const bool column = n == 1;
        const Tensor& matrix = column ? a : b;
        const bool transpose = column ? transpose_a : !transpose_b;
        const auto rows = static_cast<xt::blas_index_t>(matrix.shape()[0]);
        const auto cols = static_cast<xt::blas_index_t>(matrix.shape()[1]);
        cxxblas::gemv<xt::blas_index_t>(cxxblas::RowMajor, transpose ? cxxblas::Trans : cxxblas::NoTrans, rows, cols, 1.f,
                                        matrix.data(), cols, (column ? b : a).data(), 1, beta, c.data(), 1);
        return;
    }
    // Large products run as blocks of c's rows on xgrad's threads (see
    // parallel.hpp); a block is at least 16 rows and 64K multiply-adds, so
    // that handing it to another thread costs little against its work.
    // Row block [begin, end) of op(a) starts at row `begin` of a, or at
    // column `begin` when a is transposed; lda stays a's row length.
    const std::size_t grain = std::max<std::size_t>(16, (std::size_t(1) << 16) / (n * k));
    const auto blas = [](std::size_t v) { return static_cast<xt::blas_index_t>(v); };
    parallel_for(m, grain, [&](std::size_t begin, std::size_t end) {
        cxxblas::gemm<xt::blas_index_t>(cxxblas::RowMajor, transpose_a ? cxxblas::Trans : cxxblas::NoTrans,
                                        transpose_b ? cxxblas::Trans : cxxblas::NoTrans, blas(end - begin), blas(n), blas(k), 1.f,
                                        a.data() + (transpose_a ? begin : begin * k), blas(a.shape()[1]), b.data(),
                                        blas(b.shape()[1]), beta, c.data() + begin * n, blas(n));
    });
}

Tensor& BackwardContext::grad_buffer(int i, bool& overwrite) {
    detail::Node& in = *node_.inputs[i];
    if (!in.requires_grad) {
        throw std::logic_error(std::string("xgrad: the backward of '") + node_.op + "' wrote a gradient for input " +
                               std::to_string(i) + ", which does not require one (check needs_grad first)");
    }
    overwrite = !in.is_leaf && !in.grad_written;
    in.grad_written = true;
    return in.grad;
}

void BackwardContext::throw_gradient_shape(int i, const Shape& shape) const {
    throw ShapeError(std::string("xgrad: the backward of '") + node_.op + "' produced a gradient of shape " + shape_string(shape) +
                     " for input " + std::to_string(i) + " of shape " + shape_string(input(i)));
}

void BackwardContext::accumulate_matmul(int i, const Tensor& a, bool transpose_a, const Tensor& b, bool transpose_b) {
    if (!needs_grad(i)) return;
    bool overwrite = false;
    Tensor& g = grad_buffer(i, overwrite);
    gemm_into(node_.op, a, transpose_a, b, transpose_b, g, overwrite ? 0.f : 1.f);
}

void BackwardContext::accumulate_sum_to_input(int i, const Tensor& m) {
    if (!needs_grad(i)) return;
    bool overwrite = false;
    Tensor& g = grad_buffer(i, overwrite);
    const std::size_t rows = m.shape()[0], cols = m.shape()[1];
    const std::size_t g_rows = g.shape()[0], g_cols = g.shape()[1];
    if ((g_rows != rows && g_rows != 1) || (g_cols != cols && g_cols != 1)) {
        throw ShapeError(std::string("xgrad::") + node_.op + ": cannot sum a gradient of shape " + shape_string(m) +
                         " down to " + shape_string(g));
    }
    if (overwrite) g.fill(0.f);
    // Plain loops: each case is one pass over m without temporaries.
    const float* src = m.data();
    float* dst = g.data();
    for (std::size_t r = 0; r < rows; ++r) {
        const float* row = src + r * cols;
        float* out = dst + (g_rows == 1 ? 0 : r * g_cols);
        if (g_cols == 1) {
            float s = 0.f;
            for (std::size_t c = 0; c < cols; ++c) s += row[c];
            out[0] += s;
        } else {
            for (std::size_t c = 0; c < cols; ++c) out[c] += row[c];
        }
    }
}

}  // namespace xgrad
