// Finite-difference gradient checking: trust no backward rule until it
// agrees with differences of its own forward pass, and no differentiable
// rule until its derivative agrees with differences of the first-order
// gradient.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <xgrad/core/var.hpp>

namespace xgrad {

struct GradcheckOptions {
    // Central differences at steps h and h/2 combined by Richardson
    // extrapolation, (4 D(h/2) - D(h)) / 3, whose error is O(h^4): in float32
    // this separates a 0.5% error in a rule from rounding.
    double step = 2e-2;  // h, relative to max(1, |x|)
    double atol = 1e-4;  // an element passes when |analytic - numeric| <= atol + rtol * |numeric|
    double rtol = 3e-3;
    unsigned seed = 1;  // for the random projections
};

struct GradcheckResult {
    bool ok = true;
    // The worst element: input index (for gradgradcheck, inputs.size() means
    // the random grad_output), its position in that input, both derivatives.
    std::size_t input = 0;
    Shape position;
    double analytic = 0, numeric = 0;
    double worst_ratio = 0;   // |analytic - numeric| / tolerance; ok when <= 1
    std::size_t checked = 0;  // number of elements compared
    std::string what = "gradcheck";
    std::string report() const;
};

using CheckedFunction = std::function<Var(const std::vector<Var>&)>;

// Compares the gradient backward() gives for f at `inputs` with finite
// differences. f may return any shape: the check differentiates the fixed
// random projection L = sum(w .* f(inputs)), accumulated in double
// precision so that float rounding of L does not swamp the difference
// (a one-element output is used as it is: w = 1).
// Every input that requires a gradient is checked; their grads are zeroed
// first and hold d L / d input afterwards. f must be deterministic.
GradcheckResult gradcheck(const CheckedFunction& f, const std::vector<Var>& inputs, const GradcheckOptions& options = {});

// The second-order check (PyTorch's gradgradcheck): with a random v of
// f's output shape, the vector-Jacobian product VJP(x, v) = grad(f(x), x, v)
// computed with create_graph is differentiated again (through the ops'
// differentiable rules) with respect to the inputs and to v, and compared
// with finite differences of VJP computed by the kernel rules. Also checks
// that the differentiable rules' VJP equals the kernel rules'. An op that is
// not twice differentiable makes it throw. No leaf's grad() changes.
GradcheckResult gradgradcheck(const CheckedFunction& f, const std::vector<Var>& inputs, const GradcheckOptions& options = {});

}  // namespace xgrad
