#include <xgrad/core/op.hpp>
#include <xgrad/ops.hpp>

namespace xgrad {
namespace {

enum class Over { all, rows, cols };

// In double: a float running sum over a large batch loses digits that
// finite-difference checks need. Four running sums, so that the additions
// overlap instead of each waiting for the previous one (3x faster).
double total_of(const float* x, std::size_t n) {
    double s[4] = {0.0, 0.0, 0.0, 0.0};
    std::size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        for (std::size_t j = 0; j < 4; ++j) s[j] += x[i + j];
    }
    for (; i < n; ++i) s[0] += x[i];
    return (s[0] + s[1]) + (s[2] + s[3]);
}

// sum and mean share one op: the result is scale * the plain sum, and the
// gradient is scale * dy broadcast back over the summed dimension(s).
Var reduce(const char* name, const Var& x, Over over, float scale) {
    const std::size_t rows = x.rows(), cols = x.cols();
    const Shape out_shape = over == Over::all ? Shape{1, 1} : over == Over::rows ? Shape{1, cols} : Shape{rows, 1};
    Op op(name, {x}, out_shape);
    Tensor& y = op.out();
    const float* src = x.value().data();
    if (over == Over::rows) {
        y.fill(0.f);
        for (std::size_t r = 0; r < rows; ++r) {
            for (std::size_t c = 0; c < cols; ++c) y(0, c) += src[r * cols + c];
        }
        y *= scale;
    } else if (over == Over::all) {
        y(0, 0) = static_cast<float>(total_of(src, rows * cols) * scale);
    } else {
        for (std::size_t r = 0; r < rows; ++r) y(r, 0) = static_cast<float>(total_of(src + r * cols, cols) * scale);
    }
    op.set_attr(0, scale);
    return op.finish([](BackwardContext& ctx) {
        if (!ctx.needs_grad(0)) return;
        // Plain loops: xtensor evaluates a broadcast of dy element by element,
        // ~25x slower (220 us for a 128 x 784 input).
        const Tensor& dy = ctx.grad_output();
        const std::size_t dy_rows = dy.shape()[0], dy_cols = dy.shape()[1];
        const float scale = ctx.attr(0);
        bool overwrite = false;
        Tensor& g = ctx.grad_buffer(0, overwrite);
        if (overwrite) g.fill(0.f);
        const std::size_t rows = g.shape()[0], cols = g.shape()[1];
        for (std::size_t r = 0; r < rows; ++r) {
            const float* d = dy.data() + (dy_rows == 1 ? 0 : r * dy_cols);
            float* out = g.data() + r * cols;
            for (std::size_t c = 0; c < cols; ++c) out[c] += d[dy_cols == 1 ? 0 : c] * scale;
        }
    });
}

float count_along(const Var& x, Axis axis) { return static_cast<float>(axis == Axis::rows ? x.rows() : x.cols()); }
Over over_axis(Axis axis) { return axis == Axis::rows ? Over::rows : Over::cols; }

}  // namespace

Var sum(const Var& x) { return reduce("sum", x, Over::all, 1.f); }
Var sum(const Var& x, Axis axis) { return reduce("sum", x, over_axis(axis), 1.f); }
Var mean(const Var& x) { return reduce("mean", x, Over::all, 1.f / static_cast<float>(x.value().size())); }
Var mean(const Var& x, Axis axis) { return reduce("mean", x, over_axis(axis), 1.f / count_along(x, axis)); }

}  // namespace xgrad
