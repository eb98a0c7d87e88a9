#include <xgrad/ops/augment.hpp>

#include <algorithm>
#include <cmath>
#include <string>

#include <xgrad/core/op.hpp>

namespace xgrad {
namespace {

// y (=/+=) x with image n moved by shift(2n) rows and shift(2n + 1) columns:
// the forward pass and, with the shifts negated, its adjoint.
template <class Shift>
void move_images(const float* x, const Shape& shape, const Shift& shift, const GradSink& y) {
    const std::size_t n = shape[0], c = shape[1], h = shape[2], w = shape[3];
    for (std::size_t image = 0; image < n; ++image) {
        const long dy = shift(2 * image), dx = shift(2 * image + 1);
        const long first = std::clamp(dx, 0L, long(w)), last = std::clamp(long(w) + dx, 0L, long(w));  // the columns written
        for (std::size_t plane = image * c; plane < (image + 1) * c; ++plane) {
            for (std::size_t i = 0; i < h; ++i) {
                const long from = long(i) - dy;
                float* row = y.data() + (plane * h + i) * w;
                if (from < 0 || from >= long(h) || first >= last) {
                    if (!y.add) std::fill(row, row + w, 0.f);
                    continue;
                }
                if (!y.add) {
                    std::fill(row, row + first, 0.f);
                    std::fill(row + last, row + w, 0.f);
                }
                y.run((plane * h + i) * w + std::size_t(first), x + (plane * h + std::size_t(from)) * w + (first - dx),
                      std::size_t(last - first));
            }
        }
    }
}

// The move an op node applied, as kept in its saved tensor (small integers,
// exact as floats; a saved tensor comes from the size-keyed pool, so unlike
// an index list it allocates nothing whichever recycled node the op gets).
// Read `negated`, it is the move back: the op's adjoint.
struct Stored {
    const Tensor& shifts;
    bool negated;
    long operator()(std::size_t k) const {
        const long s = std::lround(shifts.data()[k]);
        return negated ? -s : s;
    }
};

template <class Shift>
Var translate(const Var& x, const Shift& shift) {
    Op op("translate2d", {x}, x.shape());
    Tensor& y = op.out();
    move_images(x.value().data(), x.shape(), shift, GradSink{y, false});
    if (op.records()) {
        float* shifts = op.save(Shape{2 * x.shape()[0]}).data();
        for (std::size_t k = 0; k < 2 * x.shape()[0]; ++k) shifts[k] = static_cast<float>(shift(k));
    }
    return op.finish(
        [](BackwardContext& ctx) {
            if (!ctx.needs_grad(0)) return;
            const Shape& shape = ctx.input(0).shape();
            move_images(ctx.grad_output().data(), shape, Stored{ctx.saved(), true}, ctx.sink(0));
        },
        [](GraphContext& g) {
            g.accumulate(0, translate(g.grad_output(), Stored{g.saved(), true}));
        });
}

}  // namespace

Var translate2d(const Var& x, const std::vector<long>& shifts) {
    if (x.dim() != 4) throw ShapeError("xgrad::translate2d: expected an (N, C, H, W) input, got " + shape_string(x.shape()));
    if (shifts.size() != 2 * x.shape()[0]) {
        throw ShapeError("xgrad::translate2d: " + std::to_string(shifts.size()) + " shifts for " + std::to_string(x.shape()[0]) +
                         " images (expected two per image: rows, columns)");
    }
    // A move by the whole size or more leaves only zeros: clamped to it.
    const Shape& shape = x.shape();
    return translate(x, [&](std::size_t k) {
        const long size = static_cast<long>(shape[k % 2 == 0 ? 2 : 3]);
        return std::clamp(shifts[k], -size, size);
    });
}

}  // namespace xgrad
