// Finite-difference gradient checking: trust no backward rule until it
// agrees with central differences of its own forward pass.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <xgrad/core/var.hpp>

namespace xgrad {

struct GradcheckOptions {
    double step = 1e-2;  // central-difference step h (relative to max(1, |x|))
    double atol = 1e-3;  // an element passes when |analytic - numeric| <= atol + rtol * |numeric|
    double rtol = 1e-2;
    unsigned seed = 1;  // for the random projection of a non-scalar output
};

struct GradcheckResult {
    bool ok = true;
    // The worst element: input index, its position in that input, both derivatives.
    std::size_t input = 0;
    Shape position;
    double analytic = 0, numeric = 0;
    double worst_ratio = 0;   // |analytic - numeric| / tolerance; ok when <= 1
    std::size_t checked = 0;  // number of elements compared
    std::string report() const;
};

// Compares the gradient backward() gives for f at `inputs` with central
// finite differences. f may return any shape: the check differentiates the
// fixed random projection L = sum(w .* f(inputs)), accumulated in double
// precision so that float rounding of L does not swamp the difference
// (a one-element output is used as it is: w = 1).
// Every input that requires a gradient is checked; their grads are zeroed
// first and hold d L / d input afterwards. f must be deterministic.
GradcheckResult gradcheck(const std::function<Var(const std::vector<Var>&)>& f, const std::vector<Var>& inputs,
                          const GradcheckOptions& options = {});

}  // namespace xgrad
