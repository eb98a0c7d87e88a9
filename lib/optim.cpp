#include <xgrad/optim.hpp>

#include <cmath>
#include <stdexcept>

#include <xtensor/xmath.hpp>
#include <xtensor/xnoalias.hpp>

namespace xgrad {
namespace {

std::vector<Tensor> zeros_like(const std::vector<Var>& parameters) {
    std::vector<Tensor> out;
    for (const Var& p : parameters) out.emplace_back(p.shape(), 0.f);
    return out;
}

std::string slot_name(const std::string& prefix, const char* slot, std::size_t i) {
    return prefix + slot + "." + std::to_string(i);
}

void save_slots(Archive& archive, const std::string& prefix, const char* slot, const std::vector<Tensor>& tensors) {
    for (std::size_t i = 0; i < tensors.size(); ++i) archive.put(slot_name(prefix, slot, i), tensors[i]);
}

void load_slots(const Archive& archive, const std::string& prefix, const char* slot, std::vector<Tensor>& tensors) {
    for (std::size_t i = 0; i < tensors.size(); ++i) {
        const std::string name = slot_name(prefix, slot, i);
        const Tensor& stored = archive.tensor(name);
        if (shape_of(stored) != shape_of(tensors[i])) {
            throw ShapeError("xgrad: optimizer state '" + name + "' is " + shape_string(stored) + ", expected " +
                             shape_string(tensors[i]));
        }
        tensors[i] = stored;
    }
}

}  // namespace

Optimizer::Optimizer(std::vector<Var> parameters) : parameters_(std::move(parameters)) {
    for (const Var& p : parameters_) {
        if (!p.is_leaf()) throw std::invalid_argument(std::string("xgrad: an optimizer got the result of '") + p.op_name() +
                                                      "' as a parameter; parameters are leaves");
    }
}

void Optimizer::zero_grad() {
    for (Var& p : parameters_) {
        if (p.requires_grad()) p.zero_grad();
    }
}

SGD::SGD(std::vector<Var> parameters, float lr, float momentum)
    : Optimizer(std::move(parameters)), lr_(lr), momentum_(momentum), velocity_(zeros_like(parameters_)) {}

void SGD::step() {
    for (std::size_t i = 0; i < parameters_.size(); ++i) {
        Var& p = parameters_[i];
        if (!p.requires_grad()) continue;
        Tensor& v = velocity_[i];
        xt::noalias(v) = momentum_ * v + p.grad();
        xt::noalias(p.mutable_value()) -= lr_ * v;
    }
}

void SGD::save(Archive& archive, const std::string& prefix) const { save_slots(archive, prefix, "velocity", velocity_); }
void SGD::load(const Archive& archive, const std::string& prefix) { load_slots(archive, prefix, "velocity", velocity_); }

Adam::Adam(std::vector<Var> parameters, const AdamOptions& options)
    : Optimizer(std::move(parameters)), options_(options), m_(zeros_like(parameters_)), v_(zeros_like(parameters_)) {}

void Adam::step() {
    ++t_;
    const float b1 = options_.beta1, b2 = options_.beta2;
    const float correction1 = 1.f - static_cast<float>(std::pow(double(b1), double(t_)));
    const float correction2 = 1.f - static_cast<float>(std::pow(double(b2), double(t_)));
    const float step_size = options_.lr / correction1;
    const float inv_sqrt_c2 = 1.f / std::sqrt(correction2);
    for (std::size_t i = 0; i < parameters_.size(); ++i) {
        Var& p = parameters_[i];
        if (!p.requires_grad()) continue;
        const Tensor& g = p.grad();
        xt::noalias(m_[i]) = b1 * m_[i] + (1.f - b1) * g;
        xt::noalias(v_[i]) = b2 * v_[i] + (1.f - b2) * g * g;
        xt::noalias(p.mutable_value()) -= step_size * m_[i] / (xt::sqrt(v_[i]) * inv_sqrt_c2 + options_.eps);
    }
}

void Adam::save(Archive& archive, const std::string& prefix) const {
    save_slots(archive, prefix, "m", m_);
    save_slots(archive, prefix, "v", v_);
    archive.put_text(prefix + "t", std::to_string(t_));
}

void Adam::load(const Archive& archive, const std::string& prefix) {
    load_slots(archive, prefix, "m", m_);
    load_slots(archive, prefix, "v", v_);
    const std::string& t = archive.text(prefix + "t");
    try {
        t_ = std::stol(t);
    } catch (const std::exception&) {
        throw std::runtime_error("xgrad: Adam step count '" + prefix + "t' is not a number: '" + t + "'");
    }
}

}  // namespace xgrad
