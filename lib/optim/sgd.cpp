#include <xgrad/optim/sgd.hpp>

#include <cmath>
#include <stdexcept>
#include <string>

#include <xtensor/xnoalias.hpp>

#include "state.hpp"

namespace xgrad {

namespace {

// A negative momentum makes the velocity oscillate; NaN poisons it.
const SGDOptions& checked(const SGDOptions& o) {
    const auto check = [](const char* name, float v) {
        if (!(std::isfinite(v) && v >= 0.f)) {
            throw std::invalid_argument(std::string("xgrad::SGD: ") + name + " " + detail::number_text(v) +
                                        " (expected a finite number >= 0)");
        }
    };
    check("momentum", o.momentum);
    check("dampening", o.dampening);
    check("weight_decay", o.weight_decay);
    if (o.nesterov && !(o.momentum > 0.f && o.dampening == 0.f)) {
        throw std::invalid_argument("xgrad::SGD: nesterov with momentum " + detail::number_text(o.momentum) + " and dampening " +
                                    detail::number_text(o.dampening) + " (expected momentum > 0 and dampening 0)");
    }
    return o;
}

SGDOptions with_momentum(float momentum) {
    SGDOptions o;
    o.momentum = momentum;
    return o;
}

}  // namespace

SGD::SGD(std::vector<Var> parameters, float lr, const SGDOptions& options)
    : Optimizer(std::move(parameters), lr), options_(checked(options)), velocity_(detail::zeros_like(parameters_)) {}

SGD::SGD(std::vector<Var> parameters, float lr, float momentum) : SGD(std::move(parameters), lr, with_momentum(momentum)) {}

void SGD::step() {
    const detail::FlushSubnormals flush;
    const float m = options_.momentum, wd = options_.weight_decay;
    const float keep = started_ ? 1.f - options_.dampening : 1.f;
    for (std::size_t i = 0; i < parameters_.size(); ++i) {
        Var& p = parameters_[i];
        if (!p.requires_grad()) continue;
        detail::check_step_shapes("SGD", i, p, velocity_[i]);
        Tensor& v = velocity_[i];
        Tensor& w = p.mutable_value();
        if (wd == 0.f && !options_.nesterov) {
            // The common case, without a temporary for d.
            xt::noalias(v) = m * v + keep * p.grad();
            xt::noalias(w) -= lr_ * v;
            continue;
        }
        const Tensor d = p.grad() + wd * w;
        if (m == 0.f) {
            xt::noalias(w) -= lr_ * d;
            continue;
        }
        xt::noalias(v) = m * v + keep * d;
        if (options_.nesterov) {
            xt::noalias(w) -= lr_ * (d + m * v);
        } else {
            xt::noalias(w) -= lr_ * v;
        }
    }
    started_ = true;
}

void SGD::save(Archive& archive, const std::string& prefix) const { detail::save_slots(archive, prefix, "velocity", velocity_); }

void SGD::load(const Archive& archive, const std::string& prefix) {
    detail::check_slots(archive, prefix, "velocity", velocity_);
    detail::take_slots(archive, prefix, "velocity", velocity_);
    started_ = true;
}

}  // namespace xgrad
