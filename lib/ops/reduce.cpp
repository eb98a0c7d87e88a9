#include <xgrad/ops/reduce.hpp>

#include <algorithm>
#include <cmath>
#include <string>

#include <xgrad/core/op.hpp>
#include <xgrad/ops/arithmetic.hpp>
#include <xgrad/ops/elementwise.hpp>
#include <xgrad/ops/shape.hpp>

namespace xgrad {
namespace {

// sum and mean: the result is scale * x summed to `kept` (x's shape with
// the reduced axes set to 1), and the gradient is scale * dy broadcast back.
struct Reduction {
    Shape kept;
    float scale;
};

// x's shape with the reduced axes (all when `axes` is null) set to 1;
// `out` without them, the shape of a result without keepdim; `count` the
// number of elements each result sums.
Shape kept_shape(const char* name, const Shape& shape, const Axes* axes, Shape& out, std::size_t& count) {
    xt::svector<bool, 8> reduced(shape.size(), axes == nullptr);
    if (axes != nullptr) {
        for (int axis : *axes) {
            const std::size_t a = normalize_axis(name, axis, shape);
            if (reduced[a])
                throw ShapeError(std::string("xgrad::") + name + ": axis " + std::to_string(axis) + " is listed twice");
            reduced[a] = true;
        }
    }
    Shape kept = shape;
    out.clear();
    count = 1;
    for (std::size_t d = 0; d < shape.size(); ++d) {
        if (reduced[d]) {
            kept[d] = 1;
            count *= shape[d];
        } else {
            out.push_back(shape[d]);
        }
    }
    return kept;
}

Var reduce(const char* name, const Var& x, const Axes* axes, bool keepdim, bool mean) {
    Shape out_shape;
    std::size_t count = 0;
    const Shape kept = kept_shape(name, x.shape(), axes, out_shape, count);
    if (mean && count == 0) {
        throw ShapeError(std::string("xgrad::") + name + ": the mean over no elements (input " + shape_string(x.shape()) + ")");
    }
    const float scale = mean ? 1.f / static_cast<float>(count) : 1.f;
    // Without keepdim the elements stay in the same order, under out_shape.
    Op op(name, {x}, keepdim ? kept : out_shape);
    sum_to(name, x.value().data(), x.shape(), op.out().data(), kept, false, scale);
    op.state<Reduction>(Reduction{kept, scale});
    return op.finish(
        [](BackwardContext& ctx) {
            const Reduction& r = ctx.state<Reduction>();
            if (ctx.needs_grad(0)) expand_to(ctx.op_name(), ctx.grad_output().data(), r.kept, ctx.sink(0), r.scale);
        },
        [](GraphContext& g) {
            const Reduction& r = g.state<Reduction>();
            const Var kept = reshape(g.grad_output(), ShapeSpec(r.kept.begin(), r.kept.end()));
            g.accumulate(0, broadcast_to(r.scale == 1.f ? kept : kept * r.scale, g.input(0).shape()));
        });
}

// ---- arg-max reductions ----------------------------------------------------------

// Whether v replaces `best` as the extreme seen so far: strictly larger
// (smaller), so ties keep the first; a NaN wins and then stays.
bool replaces(float v, float best, bool largest) {
    if (std::isnan(best)) return false;
    return std::isnan(v) || (largest ? v > best : v < best);
}

Var extreme(const char* name, const Var& x, const AxisLanes& l, const Shape& out_shape, bool largest) {
    if (l.n == 0) {
        throw ShapeError(std::string("xgrad::") + name + ": the reduced axis of " + shape_string(x.shape()) + " is empty");
    }
    Op op(name, {x}, out_shape);
    const float* in = x.value().data();
    float* out = op.out().data();
    std::size_t* arg = op.records() ? op.index(l.outer * l.inner) : nullptr;
    for (std::size_t o = 0; o < l.outer; ++o) {
        const float* lane = in + o * l.n * l.inner;
        float* best = out + o * l.inner;
        std::copy(lane, lane + l.inner, best);
        if (arg) {
            for (std::size_t i = 0; i < l.inner; ++i) arg[o * l.inner + i] = o * l.n * l.inner + i;
        }
        for (std::size_t j = 1; j < l.n; ++j) {
            const float* row = lane + j * l.inner;
            for (std::size_t i = 0; i < l.inner; ++i) {
                if (replaces(row[i], best[i], largest)) {
                    best[i] = row[i];
                    if (arg) arg[o * l.inner + i] = (o * l.n + j) * l.inner + i;
                }
            }
        }
    }
    return op.finish(
        [](BackwardContext& ctx) {
            if (!ctx.needs_grad(0)) return;
            Tensor& g = ctx.accumulator(0);
            const float* dy = ctx.grad_output().data();
            const std::vector<std::size_t>& arg = ctx.index();
            for (std::size_t k = 0; k < arg.size(); ++k) g.data()[arg[k]] += dy[k];
        },
        [](GraphContext& g) { g.accumulate(0, scatter_add(g.grad_output(), g.index(), g.input(0).shape())); });
}

Var extreme_along(const char* name, const Var& x, int axis, bool keepdim, bool largest) {
    const std::size_t a = normalize_axis(name, axis, x.shape());
    Shape out_shape = x.shape();
    if (keepdim) {
        out_shape[a] = 1;
    } else {
        out_shape.erase(out_shape.begin() + static_cast<std::ptrdiff_t>(a));
    }
    return extreme(name, x, lanes_around(x.shape(), a), out_shape, largest);
}

// Over all elements the gradient is split evenly over the ties, as PyTorch
// does (a NaN result: over the NaNs); the index list holds the tied
// positions, and the state dy's share of each, 1 / ties.
Var extreme_of_all(const char* name, const Var& x, bool largest) {
    const std::size_t n = x.numel();
    if (n == 0)
        throw ShapeError(std::string("xgrad::") + name + ": the reduced axis of " + shape_string(x.shape()) + " is empty");
    Op op(name, {x}, Shape{});
    const float* in = x.value().data();
    float best = in[0];
    for (std::size_t k = 1; k < n; ++k) {
        if (replaces(in[k], best, largest)) best = in[k];
    }
    op.out().data()[0] = best;
    if (op.records()) {
        const bool nan = std::isnan(best);
        const auto tied = [&](float v) { return nan ? std::isnan(v) : v == best; };
        const auto ties = static_cast<std::size_t>(std::count_if(in, in + n, tied));
        std::size_t* positions = op.index(ties);
        for (std::size_t k = 0, t = 0; k < n; ++k) {
            if (tied(in[k])) positions[t++] = k;
        }
        op.state<float>(1.f / static_cast<float>(ties));
    }
    return op.finish(
        [](BackwardContext& ctx) {
            if (!ctx.needs_grad(0)) return;
            float* g = ctx.accumulator(0).data();
            const float share = ctx.grad_output().data()[0] * ctx.state<float>();
            for (std::size_t k : ctx.index()) g[k] += share;
        },
        [](GraphContext& g) {
            const Var shares = broadcast_to(g.grad_output() * g.state<float>(), Shape{g.index().size()});
            g.accumulate(0, scatter_add(shares, g.index(), g.input(0).shape()));
        });
}

// ---- softmax --------------------------------------------------------------------

// Calls f(base, stride) for every lane along the axis: its elements are
// base, base + stride, ..., base + (n-1) stride.
template <class F>
void for_each_lane(const AxisLanes& l, const F& f) {
    // An empty axis has lanes of no elements: nothing to read (a lane's
    // first element is read unconditionally) and nothing to write.
    if (l.n == 0) return;
    for (std::size_t o = 0; o < l.outer; ++o) {
        for (std::size_t i = 0; i < l.inner; ++i) f(o * l.n * l.inner + i, l.inner);
    }
}

// y = x - max - log sum exp(x - max) along each lane; softmax is its exp.
void log_softmax_lanes(const float* x, float* y, const AxisLanes& l) {
    for_each_lane(l, [&](std::size_t base, std::size_t stride) {
        float m = x[base];
        for (std::size_t j = 1; j < l.n; ++j) m = std::max(m, x[base + j * stride]);
        double s = 0.0;
        for (std::size_t j = 0; j < l.n; ++j) s += std::exp(double(x[base + j * stride] - m));
        // (x - m) - log s, not x - (m + log s): the small log s is not
        // rounded to the precision of a large m.
        const float log_s = static_cast<float>(std::log(s));
        for (std::size_t j = 0; j < l.n; ++j) y[base + j * stride] = (x[base + j * stride] - m) - log_s;
    });
}

struct SoftmaxState {
    AxisLanes lanes;
    int axis;
};

// log_softmax: dx = dy - softmax * sum(dy), with softmax = exp(y).
void log_softmax_backward(BackwardContext& ctx) {
    const AxisLanes& l = ctx.state<SoftmaxState>().lanes;
    const float *y = ctx.output().data(), *dy = ctx.grad_output().data();
    Scratch dx(ctx.output().shape());
    for_each_lane(l, [&](std::size_t base, std::size_t stride) {
        double s = 0.0;
        for (std::size_t j = 0; j < l.n; ++j) s += dy[base + j * stride];
        for (std::size_t j = 0; j < l.n; ++j) {
            const std::size_t k = base + j * stride;
            dx.data()[k] = dy[k] - std::exp(y[k]) * static_cast<float>(s);
        }
    });
    ctx.accumulate(0, dx.tensor());
}

void log_softmax_graph(GraphContext& g) {
    const Var& dy = g.grad_output();
    g.accumulate(0, dy - exp(g.output()) * sum(dy, {g.state<SoftmaxState>().axis}, true));
}

// softmax: dx = y * (dy - sum(dy * y)).
void softmax_backward(BackwardContext& ctx) {
    const AxisLanes& l = ctx.state<SoftmaxState>().lanes;
    const float *y = ctx.output().data(), *dy = ctx.grad_output().data();
    Scratch dx(ctx.output().shape());
    for_each_lane(l, [&](std::size_t base, std::size_t stride) {
        double s = 0.0;
        for (std::size_t j = 0; j < l.n; ++j) s += double(dy[base + j * stride]) * y[base + j * stride];
        for (std::size_t j = 0; j < l.n; ++j) {
            const std::size_t k = base + j * stride;
            dx.data()[k] = y[k] * (dy[k] - static_cast<float>(s));
        }
    });
    ctx.accumulate(0, dx.tensor());
}

void softmax_graph(GraphContext& g) {
    const Var &dy = g.grad_output(), y = g.output();
    g.accumulate(0, y * (dy - sum(dy * y, {g.state<SoftmaxState>().axis}, true)));
}

Var softmax_like(const char* name, const Var& x, int axis, bool log_space) {
    const std::size_t a = normalize_axis(name, axis, x.shape());
    Op op(name, {x}, x.shape());
    const AxisLanes& l = op.state<SoftmaxState>(SoftmaxState{lanes_around(x.shape(), a), static_cast<int>(a)}).lanes;
    float* y = op.out().data();
    log_softmax_lanes(x.value().data(), y, l);
    if (!log_space) {
        for (std::size_t k = 0; k < x.numel(); ++k) y[k] = std::exp(y[k]);
    }
    return log_space ? op.finish(log_softmax_backward, log_softmax_graph) : op.finish(softmax_backward, softmax_graph);
}

}  // namespace

Var sum(const Var& x) { return reduce("sum", x, nullptr, false, false); }
Var sum(const Var& x, const Axes& axes, bool keepdim) { return reduce("sum", x, &axes, keepdim, false); }
Var mean(const Var& x) { return reduce("mean", x, nullptr, false, true); }
Var mean(const Var& x, const Axes& axes, bool keepdim) { return reduce("mean", x, &axes, keepdim, true); }

Var max(const Var& x, int axis, bool keepdim) { return extreme_along("max", x, axis, keepdim, true); }
Var min(const Var& x, int axis, bool keepdim) { return extreme_along("min", x, axis, keepdim, false); }
Var max(const Var& x) { return extreme_of_all("max", x, true); }
Var min(const Var& x) { return extreme_of_all("min", x, false); }

Var softmax(const Var& x, int axis) { return softmax_like("softmax", x, axis, false); }
Var log_softmax(const Var& x, int axis) { return softmax_like("log_softmax", x, axis, true); }

}  // namespace xgrad
