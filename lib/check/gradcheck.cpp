#include <xgrad/check/gradcheck.hpp>

#include <cmath>
#include <random>
#include <sstream>

#include <xgrad/core/op.hpp>
#include <xgrad/ops/arithmetic.hpp>

namespace xgrad {
namespace {

// L = sum(w .* y) as an op, so backward seeds y's gradient with w without
// relying on any of the ops under test (and twice differentiable itself).
Var project(const Var& y, const Var& weights) {
    Op op("gradcheck_projection", {y, weights}, Shape{});
    double total = 0.0;
    for (std::size_t i = 0; i < y.value().size(); ++i) total += double(y.value().data()[i]) * weights.value().data()[i];
    *op.out().data() = static_cast<float>(total);
    return op.finish([](GraphContext& g) {
        g.accumulate(0, g.input(1) * g.grad_output());
        g.accumulate(1, g.input(0) * g.grad_output());
    });
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

Tensor random_like(const Shape& shape, std::mt19937& rng) {
    std::uniform_real_distribution<float> uniform(-1.f, 1.f);
    Tensor t = Tensor::from_shape(shape);
    for (float& v : t) v = uniform(rng);
    return t;
}

// The derivative of `evaluate` (a scalar in double, of the current values
// of `vars`) by each element of each var, from central differences at h and
// h/2 extrapolated (Richardson), against analytic[k]; worst element into
// `result`, var k reported as input first_index + k.
void compare(const std::function<double()>& evaluate, const std::vector<Var>& vars, const std::vector<Tensor>& analytic,
             std::size_t first_index, const GradcheckOptions& options, GradcheckResult& result) {
    for (std::size_t k = 0; k < vars.size(); ++k) {
        Var in = vars[k];
        for (std::size_t e = 0; e < in.numel(); ++e) {
            const float x0 = in.value().data()[e];
            const auto difference = [&](double step) {
                const float h = static_cast<float>(step * std::max(1.0, std::abs(double(x0))));
                in.mutable_value().data()[e] = x0 + h;
                const double up = evaluate();
                in.mutable_value().data()[e] = x0 - h;
                const double down = evaluate();
                in.mutable_value().data()[e] = x0;
                // The actual distance between the two float points, not 2h.
                return (up - down) / (double(x0 + h) - double(x0 - h));
            };
            const double coarse = difference(options.step), fine = difference(options.step / 2);
            const double numeric = (4.0 * fine - coarse) / 3.0;
            const double value = analytic[k].data()[e];
            const double ratio = std::abs(value - numeric) / (options.atol + options.rtol * std::abs(numeric));
            ++result.checked;
            // The first NaN stays the worst: it is where the trouble starts.
            const bool worse =
                result.checked == 1 || (!std::isnan(result.worst_ratio) && (std::isnan(ratio) || ratio > result.worst_ratio));
            if (worse) {
                result.worst_ratio = ratio;
                result.input = first_index + k;
                result.position = unravel(e, in.shape());
                result.analytic = value;
                result.numeric = numeric;
            }
        }
    }
    result.ok = result.worst_ratio <= 1.0;  // false for NaN too
}

// The value of a gradient, zeros for an unused (undefined) one.
Tensor value_or_zeros(const Var& g, const Shape& shape) { return g.defined() ? g.value() : Tensor(shape, 0.f); }

// d total / d wrt[k] for each k, zeros where total does not depend on it
// (or is undefined: no input reached it).
std::vector<Tensor> gradients_or_zeros(const Var& total, const std::vector<Var>& wrt) {
    std::vector<Tensor> out;
    if (!total.defined() || !total.requires_grad()) {
        for (const Var& x : wrt) out.push_back(Tensor(x.shape(), 0.f));
        return out;
    }
    GradOptions unused;
    unused.allow_unused = true;
    const std::vector<Var> g = grad({total}, wrt, unused);
    for (std::size_t k = 0; k < wrt.size(); ++k) out.push_back(value_or_zeros(g[k], wrt[k].shape()));
    return out;
}

// The differentiable rules' VJP `got` against the kernel rules' `expected`,
// element by element: ok, or the first element out of tolerance (its input
// numbered as in f's inputs through index_of).
GradcheckResult compare_first_order(const std::vector<Var>& got, const std::vector<Var>& expected, const std::vector<Var>& xs,
                                    const std::vector<std::size_t>& index_of, const GradcheckOptions& options) {
    GradcheckResult result;
    for (std::size_t k = 0; k < xs.size(); ++k) {
        const Tensor want = value_or_zeros(expected[k], xs[k].shape()), have = value_or_zeros(got[k], xs[k].shape());
        for (std::size_t e = 0; e < want.size(); ++e) {
            const double a = have.data()[e], b = want.data()[e];
            const double ratio = std::abs(a - b) / (options.atol + options.rtol * std::abs(b));
            if (!(ratio <= 1.0)) {
                result.ok = false;
                result.what = "gradgradcheck (first order: the differentiable rule's VJP against the kernel rule's)";
                result.input = index_of[k];
                result.position = unravel(e, xs[k].shape());
                result.analytic = a;
                result.numeric = b;
                result.worst_ratio = ratio;
                result.checked = 1;
                return result;
            }
        }
    }
    return result;
}

}  // namespace

std::string GradcheckResult::report() const {
    std::ostringstream s;
    s << what << (ok ? " passed" : " FAILED") << " (" << checked << " elements); worst: input " << input << " at "
      << shape_string(position) << ": analytic " << analytic << ", numeric " << numeric << ", error/tolerance " << worst_ratio;
    return s.str();
}

GradcheckResult gradcheck(const CheckedFunction& f, const std::vector<Var>& inputs, const GradcheckOptions& options) {
    const Var y = f(inputs);
    std::mt19937 rng(options.seed);
    Tensor w = random_like(y.shape(), rng);
    if (w.size() == 1) *w.data() = 1.f;  // a scalar f is checked as it is
    const Var weights(w);

    std::vector<Var> checked;
    for (Var in : inputs) {
        if (!in.requires_grad()) continue;
        in.zero_grad();
        checked.push_back(in);
    }
    backward(project(y, weights));
    std::vector<Tensor> analytic;
    analytic.reserve(checked.size());
    for (const Var& in : checked) analytic.push_back(in.grad());

    GradcheckResult result;
    // Grad mode stays on: f may differentiate itself (a gradient checked
    // as a function, the way gradgradcheck's VJP is).
    compare([&] { return projected(f(inputs).value(), w); }, checked, analytic, 0, options, result);
    // Report the input's index in `inputs`, not among the checked ones.
    for (std::size_t k = 0, seen = 0; k < inputs.size() && result.checked > 0; ++k) {
        if (!inputs[k].requires_grad()) continue;
        if (seen++ == result.input) {
            result.input = k;
            break;
        }
    }
    return result;
}

GradcheckResult gradgradcheck(const CheckedFunction& f, const std::vector<Var>& inputs, const GradcheckOptions& options) {
    GradcheckResult result;
    result.what = "gradgradcheck";
    std::vector<Var> xs;  // the inputs that require a gradient
    std::vector<std::size_t> index_of;
    for (std::size_t k = 0; k < inputs.size(); ++k) {
        if (inputs[k].requires_grad()) {
            xs.push_back(inputs[k]);
            index_of.push_back(k);
        }
    }
    if (xs.empty()) return result;
    std::mt19937 rng(options.seed);
    const Var y = f(inputs);
    Var v(random_like(y.shape(), rng), true);
    std::vector<Var> weights;
    weights.reserve(xs.size());
    for (const Var& x : xs) weights.emplace_back(random_like(x.shape(), rng));

    // Analytic: L = sum_k w_k . VJP_k, differentiated through the graph of the VJP.
    GradOptions recorded;
    recorded.grad_outputs = {v};
    recorded.create_graph = true;
    recorded.allow_unused = true;
    const std::vector<Var> vjp = grad({y}, xs, recorded);
    Var total;
    for (std::size_t k = 0; k < xs.size(); ++k) {
        if (!vjp[k].defined()) continue;
        const Var term = project(vjp[k], weights[k]);
        total = total.defined() ? total + term : term;
    }
    std::vector<Var> wrt = xs;
    wrt.push_back(v);
    const std::vector<Tensor> analytic = gradients_or_zeros(total, wrt);

    // The first-order VJP by the kernel rules, as L's numeric definition.
    const auto kernel_vjp = [&] {
        GradOptions plain;
        plain.grad_outputs = {v};
        plain.allow_unused = true;
        return grad({f(inputs)}, xs, plain);
    };
    const auto evaluate = [&] {
        const std::vector<Var> g = kernel_vjp();
        double sum = 0.0;
        for (std::size_t k = 0; k < xs.size(); ++k) {
            if (g[k].defined()) sum += projected(g[k].value(), weights[k].value());
        }
        return sum;
    };
    // The differentiable rules' VJP must equal the kernel rules'.
    GradcheckResult first = compare_first_order(vjp, kernel_vjp(), xs, index_of, options);
    if (!first.ok) return first;
    compare(evaluate, wrt, analytic, 0, options, result);
    result.input = result.input < xs.size() ? index_of[result.input] : inputs.size();
    return result;
}

}  // namespace xgrad
