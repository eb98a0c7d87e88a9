#include <xgrad/check/gradcheck.hpp>

#include <cmath>
#include <random>
#include <sstream>

#include <xgrad/core/op.hpp>

namespace xgrad {
namespace {

// L = sum(w .* y) as an op, so backward seeds y's gradient with w without
// relying on any of the ops under test.
Var project(const Var& y, const Var& weights) {
    Op op("gradcheck_projection", {y, weights}, Shape{});
    double total = 0.0;
    for (std::size_t i = 0; i < y.value().size(); ++i) total += double(y.value().data()[i]) * weights.value().data()[i];
    *op.out().data() = static_cast<float>(total);
    return op.finish([](BackwardContext& ctx) { ctx.accumulate(0, ctx.input(1) * *ctx.grad_output().data()); });
}

double projected(const Tensor& y, const Tensor& weights) {
    double total = 0.0;
    for (std::size_t i = 0; i < y.size(); ++i) total += double(y.data()[i]) * double(weights.data()[i]);
    return total;
}

// The multi-index of flat element e in a tensor of `shape`.
Shape unravel(std::size_t e, const Shape& shape) {
    Shape index(shape.size(), 0);
    for (std::size_t d = shape.size(); d-- > 0;) {
        index[d] = e % shape[d];
        e /= shape[d];
    }
    return index;
}

}  // namespace

std::string GradcheckResult::report() const {
    std::ostringstream s;
    s << (ok ? "gradcheck passed" : "gradcheck FAILED") << " (" << checked << " elements); worst: input " << input << " at "
      << shape_string(position) << ": analytic " << analytic << ", numeric " << numeric << ", error/tolerance " << worst_ratio;
    return s.str();
}

GradcheckResult gradcheck(const std::function<Var(const std::vector<Var>&)>& f, const std::vector<Var>& inputs,
                          const GradcheckOptions& options) {
    const Var y = f(inputs);
    std::mt19937 rng(options.seed);
    std::uniform_real_distribution<float> uniform(-1.f, 1.f);
    Tensor w = Tensor::from_shape(y.shape());
    for (float& v : w) v = uniform(rng);
    if (w.size() == 1) *w.data() = 1.f;  // a scalar f is checked as it is
    const Var weights(w);

    for (Var in : inputs) {
        if (in.requires_grad()) in.zero_grad();
    }
    backward(project(y, weights));

    GradcheckResult result;
    NoGrad no_grad;
    for (std::size_t k = 0; k < inputs.size(); ++k) {
        Var in = inputs[k];
        if (!in.requires_grad()) continue;
        for (std::size_t e = 0; e < in.numel(); ++e) {
            const float x0 = in.value().data()[e];
            const float h = static_cast<float>(options.step * std::max(1.0, std::abs(double(x0))));
            in.mutable_value().data()[e] = x0 + h;
            const double up = projected(f(inputs).value(), w);
            in.mutable_value().data()[e] = x0 - h;
            const double down = projected(f(inputs).value(), w);
            in.mutable_value().data()[e] = x0;
            // The actual distance between the two float points, not 2h.
            const double numeric = (up - down) / (double(x0 + h) - double(x0 - h));
            const double analytic = in.grad().data()[e];
            const double ratio = std::abs(analytic - numeric) / (options.atol + options.rtol * std::abs(numeric));
            ++result.checked;
            // The first NaN stays the worst: it is where the trouble starts.
            const bool worse =
                result.checked == 1 || (!std::isnan(result.worst_ratio) && (std::isnan(ratio) || ratio > result.worst_ratio));
            if (worse) {
                result.worst_ratio = ratio;
                result.input = k;
                result.position = unravel(e, in.shape());
                result.analytic = analytic;
                result.numeric = numeric;
            }
        }
    }
    result.ok = result.worst_ratio <= 1.0;  // false for NaN too
    return result;
}

}  // namespace xgrad
