#include <xgrad/op.hpp>

#include <string>

#include <xtensor-blas/xblas.hpp>

namespace xgrad {

void gemm_into(const char* op_name, const Tensor& a, bool transpose_a, const Tensor& b, bool transpose_b, Tensor& c,
               float beta) {
    const std::size_t m = a.shape()[transpose_a ? 1 : 0], k = a.shape()[transpose_a ? 0 : 1];
    const std::size_t kb = b.shape()[transpose_b ? 1 : 0], n = b.shape()[transpose_b ? 0 : 1];
    if (k != kb || c.shape()[0] != m || c.shape()[1] != n) {
        throw ShapeError(std::string("xgrad::") + op_name + ": cannot multiply " + shape_string(a) + (transpose_a ? "^T" : "") +
                         " by " + shape_string(b) + (transpose_b ? "^T" : "") + " into " + shape_string(c));
    }
    if (k == 0) {  // BLAS leaves c untouched when there is nothing to sum
        if (beta == 0.f) {
            c.fill(0.f);  // c may hold leftovers (even NaN) from the pool
        } else {
            c *= beta;
        }
        return;
    }
    xt::blas::gemm(a, b, c, transpose_a, transpose_b, 1.f, beta);
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
