#include <xtensor/xbroadcast.hpp>

#include <xgrad/op.hpp>
#include <xgrad/ops.hpp>

namespace xgrad {
namespace {

enum class Over { all, rows, cols };

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
    } else {
        // Totals accumulate in double: a float running sum over a large
        // batch loses digits that finite-difference checks need.
        for (std::size_t r = 0; r < (over == Over::all ? 1 : rows); ++r) {
            const std::size_t begin = over == Over::all ? 0 : r * cols;
            const std::size_t end = over == Over::all ? rows * cols : begin + cols;
            double total = 0.0;
            for (std::size_t i = begin; i < end; ++i) total += src[i];
            y(r, 0) = static_cast<float>(total * scale);
        }
    }
    op.set_attr(0, scale);
    return op.finish([](BackwardContext& ctx) {
        ctx.accumulate(0, xt::broadcast(ctx.grad_output() * ctx.attr(0), ctx.input(0).shape()));
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
