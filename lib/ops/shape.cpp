#include <xgrad/ops/shape.hpp>

#include <algorithm>
#include <stdexcept>
#include <string>

#include <xtensor/xmanipulation.hpp>

#include <xgrad/core/op.hpp>
#include <xgrad/core/parallel.hpp>

namespace xgrad {
namespace {

[[noreturn]] void fail(const char* op, const std::string& why) { throw ShapeError(std::string("xgrad::") + op + ": " + why); }

// The output of reshape and its relatives is the input's elements in the
// same order: forward and backward are copies, split over the threads (on
// two, the main thread made them alone: docs/design.md).
Var relabel(const char* name, const Var& x, const Shape& shape) {
    Op op(name, {x}, shape);
    const float* in = x.value().data();
    float* out = op.out().data();
    parallel_for(x.numel(), kBlockElements,
                 [&](std::size_t begin, std::size_t end) { std::copy(in + begin, in + end, out + begin); });
    return op.finish(
        [](BackwardContext& ctx) {
            const Tensor& dy = ctx.grad_output();
            if (!ctx.needs_grad(0)) return;
            const GradSink dx = ctx.sink(0);
            parallel_for(dy.size(), kBlockElements,
                         [&](std::size_t begin, std::size_t end) { dx.run(begin, dy.data() + begin, end - begin); });
        },
        [](GraphContext& g) { g.accumulate(0, relabel("reshape", g.grad_output(), g.input(0).shape())); });
}

// Entries picked along one axis: output entry j is input entry
// index[j] (index_select) or start + j * step (slice).
struct Picked {
    AxisLanes in;                     // the input around the axis
    std::size_t count = 0;            // entries picked
    std::size_t start = 0, step = 1;  // for a slice
};

// Runs f(out_offset, in_offset) for each picked entry's inner run of `inner` elements.
template <class EntryOf, class F>
void for_each_pick(const Picked& p, const EntryOf& entry_of, const F& f) {
    const AxisLanes& l = p.in;
    for (std::size_t o = 0; o < l.outer; ++o) {
        for (std::size_t j = 0; j < p.count; ++j) f((o * p.count + j) * l.inner, (o * l.n + entry_of(j)) * l.inner);
    }
}

// The flat input index of every output element of a pick, in output order.
template <class EntryOf>
std::vector<std::size_t> picked_positions(const Picked& p, const EntryOf& entry_of) {
    std::vector<std::size_t> positions;
    positions.reserve(p.in.outer * p.count * p.in.inner);
    for_each_pick(p, entry_of, [&](std::size_t, std::size_t i) {
        for (std::size_t k = 0; k < p.in.inner; ++k) positions.push_back(i + k);
    });
    return positions;
}

void check_indices(const char* op, const std::vector<std::size_t>& indices, std::size_t size) {
    for (std::size_t k = 0; k < indices.size(); ++k) {
        if (indices[k] >= size) {
            throw std::out_of_range(std::string("xgrad::") + op + ": index " + std::to_string(indices[k]) + " (position " +
                                    std::to_string(k) + ") is past the " + std::to_string(size) + " elements");
        }
    }
}

Shape picked_shape(const Shape& shape, std::size_t axis, std::size_t count) {
    Shape out = shape;
    out[axis] = count;
    return out;
}

}  // namespace

// ---- reshaping ----------------------------------------------------------------------

Var reshape(const Var& x, const ShapeSpec& spec) {
    // Sizes whose product wraps around could match the input's count.
    Shape given;
    for (long size : spec) {
        if (size >= 0) given.push_back(static_cast<std::size_t>(size));
    }
    checked_numel("reshape", given);
    Shape shape(spec.size());
    std::size_t known = 1, inferred = spec.size();
    for (std::size_t d = 0; d < spec.size(); ++d) {
        if (spec[d] == -1) {
            if (inferred != spec.size()) fail("reshape", "more than one -1 in the target shape");
            inferred = d;
        } else if (spec[d] < 0) {
            fail("reshape", "size " + std::to_string(spec[d]) + " in the target shape");
        } else {
            shape[d] = static_cast<std::size_t>(spec[d]);
            known *= shape[d];
        }
    }
    if (inferred != spec.size()) {
        if (known == 0 || x.numel() % known != 0) {
            fail("reshape", "cannot infer the -1 of the target shape for " + std::to_string(x.numel()) + " elements of " +
                                shape_string(x.shape()));
        }
        shape[inferred] = x.numel() / known;
    }
    if (numel(shape) != x.numel()) {
        fail("reshape", "cannot view " + shape_string(x.shape()) + " (" + std::to_string(x.numel()) + " elements) as " +
                            shape_string(shape));
    }
    return relabel("reshape", x, shape);
}

Var flatten(const Var& x, int start_axis, int end_axis) {
    if (x.dim() == 0) return relabel("flatten", x, Shape{1});
    const std::size_t first = normalize_axis("flatten", start_axis, x.shape());
    const std::size_t last = normalize_axis("flatten", end_axis, x.shape());
    if (first > last)
        fail("flatten", "start axis " + std::to_string(start_axis) + " comes after end axis " + std::to_string(end_axis));
    Shape shape;
    for (std::size_t d = 0; d < first; ++d) shape.push_back(x.shape()[d]);
    std::size_t merged = 1;
    for (std::size_t d = first; d <= last; ++d) merged *= x.shape()[d];
    shape.push_back(merged);
    for (std::size_t d = last + 1; d < x.dim(); ++d) shape.push_back(x.shape()[d]);
    return relabel("flatten", x, shape);
}

Var unsqueeze(const Var& x, int axis) {
    Shape grown = x.shape();
    grown.push_back(1);  // normalise against rank + 1
    const std::size_t a = normalize_axis("unsqueeze", axis, grown);
    // Built element by element: GCC 12 warns (-Warray-bounds) inside
    // svector::insert here.
    for (std::size_t d = 0, from = 0; d < grown.size(); ++d) grown[d] = d == a ? 1 : x.shape()[from++];
    return relabel("unsqueeze", x, grown);
}

Var squeeze(const Var& x, int axis) {
    const std::size_t a = normalize_axis("squeeze", axis, x.shape());
    if (x.shape()[a] != 1) {
        fail("squeeze", "axis " + std::to_string(axis) + " of " + shape_string(x.shape()) + " has size " +
                            std::to_string(x.shape()[a]) + ", not 1");
    }
    Shape shape = x.shape();
    shape.erase(shape.begin() + static_cast<std::ptrdiff_t>(a));
    return relabel("squeeze", x, shape);
}

// ---- permutations ----------------------------------------------------------------

Var permute(const Var& x, const Axes& order) {
    if (order.size() != x.dim()) {
        fail("permute", "an order of " + std::to_string(order.size()) + " axes for " + shape_string(x.shape()));
    }
    Shape perm(order.size()), inverse(order.size()), shape(order.size());
    xt::svector<bool, 8> seen(order.size(), false);
    for (std::size_t i = 0; i < order.size(); ++i) {
        const std::size_t a = normalize_axis("permute", order[i], x.shape());
        if (seen[a]) fail("permute", "axis " + std::to_string(order[i]) + " appears twice in the order");
        seen[a] = true;
        perm[i] = a;
        inverse[a] = i;
        shape[i] = x.shape()[a];
    }
    Op op("permute", {x}, shape);
    xt::noalias(op.out()) = xt::transpose(x.value(), perm);
    op.state<Shape>(inverse);
    return op.finish([](BackwardContext& ctx) { ctx.accumulate(0, xt::transpose(ctx.grad_output(), ctx.state<Shape>())); },
                     [](GraphContext& g) {
                         const Shape& inverse = g.state<Shape>();
                         g.accumulate(0, permute(g.grad_output(), Axes(inverse.begin(), inverse.end())));
                     });
}

Var transpose(const Var& x, int axis0, int axis1) {
    const std::size_t a = normalize_axis("transpose", axis0, x.shape());
    const std::size_t b = normalize_axis("transpose", axis1, x.shape());
    Axes order;
    for (std::size_t d = 0; d < x.dim(); ++d) order.push_back(static_cast<int>(d));
    std::swap(order[a], order[b]);
    return permute(x, order);
}

// ---- joining and cutting ------------------------------------------------------------

namespace {

// Where the inputs of a concatenation sit in the output: seen as `outer`
// blocks (the product of the sizes before the axis) of `block` elements
// each, every block holds one run of each input in turn (input k's run is
// its size along the axis times the sizes after it).
struct Joined {
    std::size_t outer, block, axis;
};

Shape joined_shape(const std::vector<Var>& xs, std::size_t axis) {
    const Shape& first = xs[0].shape();
    Shape out = first;
    out[axis] = 0;
    for (std::size_t k = 0; k < xs.size(); ++k) {
        const Shape& s = xs[k].shape();
        bool fits = s.size() == first.size();
        for (std::size_t d = 0; fits && d < s.size(); ++d) fits = d == axis || s[d] == first[d];
        if (!fits) {
            fail("concat", "input " + std::to_string(k) + " " + shape_string(s) + " does not fit input 0 " + shape_string(first) +
                               " (every size but that of axis " + std::to_string(axis) + " must match)");
        }
        out[axis] += s[axis];
    }
    return out;
}

}  // namespace

Var concat(const std::vector<Var>& xs, int axis) {
    if (xs.empty()) fail("concat", "no inputs");
    const std::size_t a = normalize_axis("concat", axis, xs[0].shape());
    const Shape shape = joined_shape(xs, a);
    Op op("concat", xs, shape);
    const AxisLanes lanes = lanes_around(shape, a);
    const Joined& joined = op.state<Joined>(Joined{lanes.outer, lanes.n * lanes.inner, a});
    float* out = op.out().data();
    std::size_t offset = 0;  // where input k's run starts inside each block
    for (const Var& x : xs) {
        const std::size_t run = x.shape()[a] * lanes.inner;
        for (std::size_t b = 0; b < joined.outer; ++b)
            std::copy_n(x.value().data() + b * run, run, out + b * joined.block + offset);
        offset += run;
    }
    return op.finish(
        [](BackwardContext& ctx) {
            const Joined& l = ctx.state<Joined>();
            const float* dy = ctx.grad_output().data();
            std::size_t offset = 0;
            for (std::size_t k = 0; k < ctx.num_inputs(); ++k) {
                const std::size_t run = l.outer == 0 ? 0 : ctx.input(k).size() / l.outer;
                if (ctx.needs_grad(k)) {
                    const GradSink dx = ctx.sink(k);
                    for (std::size_t b = 0; b < l.outer; ++b) dx.run(b * run, dy + b * l.block + offset, run);
                }
                offset += run;
            }
        },
        [](GraphContext& g) {
            const std::size_t axis = g.state<Joined>().axis;
            std::size_t start = 0;
            for (std::size_t k = 0; k < g.num_inputs(); ++k) {
                const std::size_t size = g.input(k).shape()[axis];
                if (g.needs_grad(k)) g.accumulate(k, narrow(g.grad_output(), static_cast<int>(axis), start, size));
                start += size;
            }
        });
}

Var stack(const std::vector<Var>& xs, int axis) {
    if (xs.empty()) fail("stack", "no inputs");
    // The axis is one of the result's (rank + 1): checked here, so that the
    // message does not blame the unsqueeze below.
    const long rank = static_cast<long>(xs[0].dim()) + 1;
    if (axis < -rank || axis >= rank) {
        fail("stack", "axis " + std::to_string(axis) + " is out of range for stacking inputs of shape " +
                          shape_string(xs[0].shape()) + " (the result has rank " + std::to_string(rank) + ")");
    }
    std::vector<Var> grown;
    grown.reserve(xs.size());
    for (std::size_t k = 0; k < xs.size(); ++k) {
        if (xs[k].shape() != xs[0].shape()) {
            fail("stack", "input " + std::to_string(k) + " " + shape_string(xs[k].shape()) + " differs from input 0 " +
                              shape_string(xs[0].shape()));
        }
        grown.push_back(unsqueeze(xs[k], axis));
    }
    return concat(grown, axis);
}

namespace {

Var sliced(const Var& x, const Picked& p, const Shape& shape);

// The adjoint of a slice: dy placed at the picked entries of zeros of
// `shape`. Its own adjoint is the slice, so both are differentiable any
// number of times with typed state alone (no index list: nothing allocates
// in a double backward).
Var unsliced(const Var& dy, const Picked& p, const Shape& shape) {
    Op op("slice_backward", {dy}, shape);
    const Picked& picked = op.state<Picked>(p);
    const auto entry = [&picked](std::size_t j) { return picked.start + j * picked.step; };
    Tensor& out = op.out();
    std::fill(out.begin(), out.end(), 0.f);
    const float* in = dy.value().data();
    for_each_pick(picked, entry, [&](std::size_t o, std::size_t i) { std::copy_n(in + o, picked.in.inner, out.data() + i); });
    return op.finish(
        [](BackwardContext& ctx) {
            if (!ctx.needs_grad(0)) return;
            const Picked& p = ctx.state<Picked>();
            const auto entry = [&p](std::size_t j) { return p.start + j * p.step; };
            const GradSink dx = ctx.sink(0);
            const float* g = ctx.grad_output().data();
            for_each_pick(p, entry, [&](std::size_t o, std::size_t i) { dx.run(o, g + i, p.in.inner); });
        },
        [](GraphContext& g) { g.accumulate(0, sliced(g.grad_output(), g.state<Picked>(), g.input(0).shape())); });
}

Var sliced(const Var& x, const Picked& p, const Shape& shape) {
    Op op("slice", {x}, shape);
    const Picked& picked = op.state<Picked>(p);
    const auto entry = [&picked](std::size_t j) { return picked.start + j * picked.step; };
    const float* in = x.value().data();
    float* out = op.out().data();
    for_each_pick(picked, entry, [&](std::size_t o, std::size_t i) { std::copy_n(in + i, picked.in.inner, out + o); });
    return op.finish(
        [](BackwardContext& ctx) {
            if (!ctx.needs_grad(0)) return;
            const Picked& p = ctx.state<Picked>();
            float* g = ctx.accumulator(0).data();
            const float* dy = ctx.grad_output().data();
            const auto entry = [&p](std::size_t j) { return p.start + j * p.step; };
            for_each_pick(p, entry, [&](std::size_t o, std::size_t i) {
                for (std::size_t k = 0; k < p.in.inner; ++k) g[i + k] += dy[o + k];
            });
        },
        [](GraphContext& g) { g.accumulate(0, unsliced(g.grad_output(), g.state<Picked>(), g.input(0).shape())); });
}

}  // namespace

Var slice(const Var& x, int axis, long start, long end, long step) {
    const std::size_t a = normalize_axis("slice", axis, x.shape());
    if (step < 1) fail("slice", "step " + std::to_string(step) + " (it must be at least 1)");
    const long n = static_cast<long>(x.shape()[a]);
    const auto clamp_index = [n](long i) { return std::clamp(i < 0 ? i + n : i, 0L, n); };
    const long first = clamp_index(start), stop = std::max(clamp_index(end), first);
    Picked p;
    p.in = lanes_around(x.shape(), a);
    p.start = static_cast<std::size_t>(first);
    p.step = static_cast<std::size_t>(step);
    // Not (stop - first + step - 1) / step, which overflows for a step near LONG_MAX.
    p.count = stop == first ? 0 : static_cast<std::size_t>((stop - first - 1) / step + 1);
    return sliced(x, p, picked_shape(x.shape(), a, p.count));
}

Var narrow(const Var& x, int axis, std::size_t start, std::size_t length) {
    const std::size_t a = normalize_axis("narrow", axis, x.shape());
    if (start > x.shape()[a] || length > x.shape()[a] - start) {
        fail("narrow", "elements " + std::to_string(start) + " to " + std::to_string(start + length) + " of axis " +
                           std::to_string(axis) + " of " + shape_string(x.shape()) + " are past its end");
    }
    return slice(x, axis, static_cast<long>(start), static_cast<long>(start + length));
}

std::vector<Var> split(const Var& x, const std::vector<std::size_t>& sizes, int axis) {
    const std::size_t a = normalize_axis("split", axis, x.shape());
    std::size_t total = 0;
    for (std::size_t s : sizes) {
        // A sum that wraps could match the axis (and then narrow would fail).
        if (s > x.shape()[a] - std::min(total, x.shape()[a])) {
            std::string listed;
            for (std::size_t t : sizes) listed += (listed.empty() ? "" : ", ") + std::to_string(t);
            fail("split", "sizes (" + listed + ") sum past axis " + std::to_string(axis) + " of " + shape_string(x.shape()));
        }
        total += s;
    }
    if (total != x.shape()[a]) {
        fail("split", "sizes summing to " + std::to_string(total) + " for axis " + std::to_string(axis) + " of " +
                          shape_string(x.shape()));
    }
    std::vector<Var> parts;
    std::size_t start = 0;
    for (std::size_t s : sizes) {
        parts.push_back(narrow(x, axis, start, s));
        start += s;
    }
    return parts;
}

std::vector<Var> chunk(const Var& x, std::size_t chunks, int axis) {
    const std::size_t a = normalize_axis("chunk", axis, x.shape());
    if (chunks == 0) fail("chunk", "0 chunks");
    const std::size_t n = x.shape()[a], each = (n + chunks - 1) / chunks;
    std::vector<std::size_t> sizes;
    for (std::size_t start = 0; start < n; start += each) sizes.push_back(std::min(each, n - start));
    if (sizes.empty()) sizes.push_back(0);
    return split(x, sizes, axis);
}

// ---- gathering ---------------------------------------------------------------------

Var index_select(const Var& x, int axis, const std::vector<std::size_t>& indices) {
    const std::size_t a = normalize_axis("index_select", axis, x.shape());
    for (std::size_t j = 0; j < indices.size(); ++j) {
        if (indices[j] >= x.shape()[a]) {
            throw std::out_of_range("xgrad::index_select: index " + std::to_string(indices[j]) + " (position " +
                                    std::to_string(j) + ") is past axis " + std::to_string(axis) + " of " +
                                    shape_string(x.shape()));
        }
    }
    Picked p;
    p.in = lanes_around(x.shape(), a);
    p.count = indices.size();
    Op op("index_select", {x}, picked_shape(x.shape(), a, p.count));
    op.state<Picked>(p);
    const float* in = x.value().data();
    float* out = op.out().data();
    for_each_pick(
        p, [&indices](std::size_t j) { return indices[j]; },
        [&](std::size_t o, std::size_t i) { std::copy_n(in + i, p.in.inner, out + o); });
    if (op.records()) std::copy(indices.begin(), indices.end(), op.index(indices.size()));
    return op.finish(
        [](BackwardContext& ctx) {
            if (!ctx.needs_grad(0)) return;
            const Picked& p = ctx.state<Picked>();
            const std::vector<std::size_t>& indices = ctx.index();
            float* g = ctx.accumulator(0).data();
            const float* dy = ctx.grad_output().data();
            for_each_pick(
                p, [&indices](std::size_t j) { return indices[j]; },
                [&](std::size_t o, std::size_t i) {
                    for (std::size_t k = 0; k < p.in.inner; ++k) g[i + k] += dy[o + k];
                });
        },
        [](GraphContext& g) {
            const std::vector<std::size_t>& indices = g.index();
            const auto entry = [&indices](std::size_t j) { return indices[j]; };
            g.accumulate(0, scatter_add(g.grad_output(), picked_positions(g.state<Picked>(), entry), g.input(0).shape()));
        });
}

Var gather(const Var& x, int axis, const xt::xarray<std::size_t>& index) {
    const std::size_t a = normalize_axis("gather", axis, x.shape());
    const Shape& shape = x.shape();
    if (index.dimension() != x.dim()) {
        fail("gather", "an index of rank " + std::to_string(index.dimension()) + " for " + shape_string(shape));
    }
    for (std::size_t d = 0; d < shape.size(); ++d) {
        if (d != a && index.shape()[d] > shape[d]) {
            fail("gather", "the index's shape " + shape_string(Shape(index.shape().begin(), index.shape().end())) + " exceeds " +
                               shape_string(shape) + " along axis " + std::to_string(d));
        }
    }
    const Shape out_shape(index.shape().begin(), index.shape().end());
    Op op("gather", {x}, out_shape);
    std::size_t* positions = op.records() ? op.index(index.size()) : nullptr;
    float* out = op.out().data();
    // Walk the index in row-major order, tracking its multi-index.
    xt::svector<std::size_t, 8> at(shape.size(), 0);
    for (std::size_t k = 0; k < index.size(); ++k) {
        const std::size_t picked = index.data()[k];
        if (picked >= shape[a]) {
            throw std::out_of_range("xgrad::gather: index " + std::to_string(picked) + " is past axis " + std::to_string(axis) +
                                    " of " + shape_string(shape));
        }
        std::size_t flat = 0;
        for (std::size_t d = 0; d < shape.size(); ++d) flat = flat * shape[d] + (d == a ? picked : at[d]);
        out[k] = x.value().data()[flat];
        if (positions) positions[k] = flat;
        for (std::size_t d = shape.size(); d-- > 0;) {
            if (++at[d] < out_shape[d]) break;
            at[d] = 0;
        }
    }
    return op.finish(
        [](BackwardContext& ctx) {
            if (!ctx.needs_grad(0)) return;
            float* g = ctx.accumulator(0).data();
            const float* dy = ctx.grad_output().data();
            const std::vector<std::size_t>& positions = ctx.index();
            for (std::size_t k = 0; k < positions.size(); ++k) g[positions[k]] += dy[k];
        },
        [](GraphContext& g) { g.accumulate(0, scatter_add(g.grad_output(), g.index(), g.input(0).shape())); });
}

// ---- flat positions: take and its adjoint ------------------------------------------

Var take(const Var& x, const std::vector<std::size_t>& indices, const Shape& shape) {
    if (checked_numel("take", shape) != indices.size()) {
        fail("take", std::to_string(indices.size()) + " indices for an output of shape " + shape_string(shape));
    }
    check_indices("take", indices, x.numel());
    Op op("take", {x}, shape);
    const float* in = x.value().data();
    float* out = op.out().data();
    for (std::size_t k = 0; k < indices.size(); ++k) out[k] = in[indices[k]];
    if (op.records()) std::copy(indices.begin(), indices.end(), op.index(indices.size()));
    return op.finish(
        [](BackwardContext& ctx) {
            if (!ctx.needs_grad(0)) return;
            float* dx = ctx.accumulator(0).data();
            const float* dy = ctx.grad_output().data();
            const std::vector<std::size_t>& indices = ctx.index();
            for (std::size_t k = 0; k < indices.size(); ++k) dx[indices[k]] += dy[k];
        },
        [](GraphContext& g) { g.accumulate(0, scatter_add(g.grad_output(), g.index(), g.input(0).shape())); });
}

Var scatter_add(const Var& values, const std::vector<std::size_t>& indices, const Shape& shape) {
    if (values.numel() != indices.size()) {
        fail("scatter_add", std::to_string(indices.size()) + " indices for " + std::to_string(values.numel()) + " values " +
                                shape_string(values.shape()));
    }
    check_indices("scatter_add", indices, checked_numel("scatter_add", shape));
    Op op("scatter_add", {values}, shape);
    float* out = op.out().data();
    std::fill(out, out + op.out().size(), 0.f);
    const float* v = values.value().data();
    for (std::size_t k = 0; k < indices.size(); ++k) out[indices[k]] += v[k];
    if (op.records()) std::copy(indices.begin(), indices.end(), op.index(indices.size()));
    return op.finish(
        [](BackwardContext& ctx) {
            if (!ctx.needs_grad(0)) return;
            const float* dy = ctx.grad_output().data();
            const std::vector<std::size_t>& indices = ctx.index();
            ctx.sink(0).elements([&](auto&& put) {
                for (std::size_t k = 0; k < indices.size(); ++k) put(k, dy[indices[k]]);
            });
        },
        [](GraphContext& g) { g.accumulate(0, take(g.grad_output(), g.index(), g.input(0).shape())); });
}

}  // namespace xgrad
