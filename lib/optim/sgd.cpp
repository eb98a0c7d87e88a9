#include <xgrad/optim/sgd.hpp>

#include <cmath>
#include <stdexcept>

#include <xtensor/xnoalias.hpp>

#include "state.hpp"

namespace xgrad {

SGD::SGD(std::vector<Var> parameters, float lr, float momentum)
    : Optimizer(std::move(parameters), lr), momentum_(momentum), velocity_(detail::zeros_like(parameters_)) {
    // A negative momentum makes the velocity oscillate; NaN poisons it.
    if (!(std::isfinite(momentum) && momentum >= 0.f)) {
        throw std::invalid_argument("xgrad::SGD: momentum " + detail::number_text(momentum) + " (expected a finite number >= 0)");
    }
}

void SGD::step() {
    const detail::FlushSubnormals flush;
    for (std::size_t i = 0; i < parameters_.size(); ++i) {
        Var& p = parameters_[i];
        if (!p.requires_grad()) continue;
        detail::check_step_shapes("SGD", i, p, velocity_[i]);
        Tensor& v = velocity_[i];
        xt::noalias(v) = momentum_ * v + p.grad();
        xt::noalias(p.mutable_value()) -= lr_ * v;
    }
}

void SGD::save(Archive& archive, const std::string& prefix) const { detail::save_slots(archive, prefix, "velocity", velocity_); }

void SGD::load(const Archive& archive, const std::string& prefix) {
    detail::check_slots(archive, prefix, "velocity", velocity_);
    detail::take_slots(archive, prefix, "velocity", velocity_);
}

}  // namespace xgrad
