#include <xgrad/optim/optimizer.hpp>

#include <cmath>
#include <sstream>
#include <stdexcept>

#include <xtensor/xnoalias.hpp>

#include "state.hpp"

namespace xgrad {

namespace detail {

std::string number_text(double value) {
    std::ostringstream text;
    text << value;
    return text.str();
}

void check_step_shapes(const char* optimizer, std::size_t i, const Var& p, const Tensor& state) {
    const Shape& value = p.value().shape();
    if (value == p.grad().shape() && value == state.shape()) return;
    throw ShapeError(std::string("xgrad::") + optimizer + "::step: parameter " + std::to_string(i) + " is " +
                     shape_string(value) + " but its gradient is " + shape_string(p.grad().shape()) + " and its state " +
                     shape_string(state) +
                     ": a parameter's value was replaced by one of another shape (mutable_value() must keep the shape)");
}

std::vector<Tensor> zeros_like(const std::vector<Var>& parameters) {
    std::vector<Tensor> out;
    out.reserve(parameters.size());
    for (const Var& p : parameters) out.emplace_back(p.shape(), 0.f);
    return out;
}

namespace {
std::string slot_name(const std::string& prefix, const char* slot, std::size_t i) {
    return prefix + slot + "." + std::to_string(i);
}
}  // namespace

void save_slots(Archive& archive, const std::string& prefix, const char* slot, const std::vector<Tensor>& tensors) {
    for (std::size_t i = 0; i < tensors.size(); ++i) archive.put(slot_name(prefix, slot, i), tensors[i]);
}

void check_slots(const Archive& archive, const std::string& prefix, const char* slot, const std::vector<Tensor>& tensors) {
    for (std::size_t i = 0; i < tensors.size(); ++i) {
        const std::string name = slot_name(prefix, slot, i);
        const Tensor& stored = archive.tensor(name);
        if (stored.shape() != tensors[i].shape()) {
            throw ShapeError("xgrad: optimizer state '" + name + "' is " + shape_string(stored) + ", expected " +
                             shape_string(tensors[i]));
        }
    }
}

void take_slots(const Archive& archive, const std::string& prefix, const char* slot, std::vector<Tensor>& tensors) {
    for (std::size_t i = 0; i < tensors.size(); ++i) xt::noalias(tensors[i]) = archive.tensor(slot_name(prefix, slot, i));
}

}  // namespace detail

namespace {
void check_lr(float lr) {
    if (!(std::isfinite(lr) && lr >= 0.f)) {
        throw std::invalid_argument("xgrad: learning rate " + std::to_string(lr) + " (expected a finite number >= 0)");
    }
}
}  // namespace

Optimizer::Optimizer(std::vector<Var> parameters, float lr) : parameters_(std::move(parameters)), lr_(lr) {
    check_lr(lr);
    for (std::size_t i = 0; i < parameters_.size(); ++i) {
        const Var& p = parameters_[i];
        if (!p.is_leaf()) {
            throw std::invalid_argument(std::string("xgrad: an optimizer got the result of '") + p.op_name() +
                                        "' as a parameter; parameters are leaves");
        }
        // A leaf's value is its identity: listed twice, it would be stepped twice.
        for (std::size_t j = 0; j < i; ++j) {
            if (&parameters_[j].value() == &p.value()) {
                throw std::invalid_argument("xgrad: an optimizer got parameter " + std::to_string(j) +
                                            " twice (again as parameter " + std::to_string(i) +
                                            "); each step would update it twice");
            }
        }
    }
}

void Optimizer::zero_grad() {
    for (Var& p : parameters_) {
        if (p.requires_grad()) p.zero_grad();
    }
}

void Optimizer::set_lr(float lr) {
    check_lr(lr);
    lr_ = lr;
}

double clip_grad_norm(const std::vector<Var>& parameters, double max_norm, bool error_if_nonfinite) {
    // A negative bound would reverse the gradients, NaN would skip the clipping.
    if (!(max_norm >= 0.0)) {
        throw std::invalid_argument("xgrad::clip_grad_norm: max_norm " + detail::number_text(max_norm) +
                                    " (expected a number >= 0)");
    }
    double squares = 0.0;
    for (const Var& p : parameters) {
        if (!p.requires_grad()) continue;
        for (float g : p.grad()) squares += double(g) * double(g);
    }
    const double norm = std::sqrt(squares);
    if (error_if_nonfinite && !std::isfinite(norm)) {
        throw std::runtime_error("xgrad::clip_grad_norm: the gradients' total norm is " + detail::number_text(norm) +
                                 " (expected a finite number, as error_if_nonfinite asks)");
    }
    // PyTorch's 1e-6 keeps a zero norm from dividing by zero; a factor of
    // at least 1 would change nothing. NaN fails the test, and scales.
    const double factor_wide = max_norm / (norm + 1e-6);
    if (!(factor_wide >= 1.0)) {
        const auto factor = static_cast<float>(factor_wide);
        for (Var p : parameters) {
            if (p.requires_grad()) p.mutable_grad() *= factor;
        }
    }
    return norm;
}

}  // namespace xgrad
