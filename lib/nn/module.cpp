#include <xgrad/nn/module.hpp>

#include <optional>
#include <stdexcept>
#include <typeinfo>

#include <xtensor/xnoalias.hpp>

#include <xgrad/nn/activation.hpp>
#include <xgrad/nn/conv.hpp>
#include <xgrad/nn/norm.hpp>

namespace xgrad {

void Module::register_parameter(const std::string& name, Var& parameter) { parameters_.emplace_back(name, &parameter); }
void Module::register_buffer(const std::string& name, Var& buffer) { buffers_.emplace_back(name, &buffer); }
void Module::register_module(const std::string& name, Module& child) { children_.emplace_back(name, &child); }

void Module::collect(const std::string& prefix, NamedVars& parameters, NamedVars* buffers) const {
    for (const auto& [name, p] : parameters_) parameters.emplace_back(prefix + name, *p);
    if (buffers) {
        for (const auto& [name, b] : buffers_) buffers->emplace_back(prefix + name, *b);
    }
    for (const auto& [name, child] : children_) child->collect(prefix + name + ".", parameters, buffers);
}

NamedVars Module::named_parameters() const {
    NamedVars out;
    collect("", out, nullptr);
    return out;
}

std::vector<Var> Module::parameters() const {
    std::vector<Var> out;
    for (auto& [name, p] : named_parameters()) out.push_back(p);
    return out;
}

NamedVars Module::named_buffers() const {
    NamedVars parameters, buffers;
    collect("", parameters, &buffers);
    return buffers;
}

std::vector<Var> Module::buffers() const {
    std::vector<Var> out;
    for (auto& [name, b] : named_buffers()) out.push_back(b);
    return out;
}

void Module::zero_grad() {
    for (Var& p : parameters()) {
        if (p.requires_grad()) p.zero_grad();
    }
}

void Module::set_requires_grad(bool requires) { xgrad::set_requires_grad(parameters(), requires); }

void Module::train(bool training) {
    training_ = training;
    for (auto& [name, child] : children_) child->train(training);
}

void Module::visit(const std::function<void(Module&)>& f) {
    f(*this);
    for (auto& [name, child] : children_) child->visit(f);
}

void Module::save(Archive& archive, const std::string& prefix) const {
    NamedVars parameters, buffers;
    collect(prefix, parameters, &buffers);
    for (const auto& [name, v] : parameters) archive.put(name, v.value());
    for (const auto& [name, v] : buffers) archive.put(name, v.value());
}

void Module::load(const Archive& archive, const std::string& prefix) {
    NamedVars entries;
    collect(prefix, entries, &entries);
    for (const auto& [name, v] : entries) {
        const Tensor& stored = archive.tensor(name);
        if (stored.shape() != v.shape()) {
            throw ShapeError("xgrad: '" + name + "' is " + shape_string(v.shape()) + " but the archive holds " +
                             shape_string(stored));
        }
    }
    for (auto& [name, v] : entries) xt::noalias(v.mutable_value()) = archive.tensor(name);
}

void Sequential::add(std::unique_ptr<Module> layer) {
    if (!layer) throw std::invalid_argument("xgrad::Sequential::add: no layer");
    register_module(std::to_string(layers_.size()), *layer);
    layer->train(is_training());
    layers_.push_back(std::move(layer));
}

namespace {

// layer(x) and the rectifier of `slope` after it as one op, for exactly
// these classes (typeid, not dynamic_cast: a subclass may have given its
// forward() another meaning, which fusing would skip); none for any other,
// nor for a Conv2d with a rectifier of its own.
std::optional<Var> run_rectified(Module& layer, const Var& x, float slope) {
    const std::type_info& type = typeid(layer);
    if (type == typeid(BatchNorm) || type == typeid(BatchNorm1d) || type == typeid(BatchNorm2d)) {
        return static_cast<BatchNorm&>(layer).forward_rectified(x, slope);
    }
    if (type == typeid(Conv2d)) {
        auto& conv = static_cast<Conv2d&>(layer);
        if (!conv.options().rectifier_slope) return conv.forward_rectified(x, slope);
    }
    return std::nullopt;
}

// The slope of a ReLU (0) or LeakyReLU layer that batch_norm and conv2d can
// take; none for any other.
std::optional<float> rectifier_slope(const Module& layer) {
    if (typeid(layer) == typeid(ReLU)) return 0.f;
    if (typeid(layer) == typeid(LeakyReLU)) {
        const float slope = static_cast<const LeakyReLU&>(layer).negative_slope();
        if (valid_rectifier_slope(slope)) return slope;
    }
    return std::nullopt;
}

}  // namespace

Var Sequential::forward(const Var& x) {
    Var h = x;
    for (std::size_t i = 0; i < layers_.size(); ++i) {
        const std::optional<float> slope = i + 1 < layers_.size() ? rectifier_slope(*layers_[i + 1]) : std::nullopt;
        std::optional<Var> fused = slope ? run_rectified(*layers_[i], h, *slope) : std::nullopt;
        if (fused) {
            h = *fused;
            ++i;  // the rectifier ran with the layer
        } else {
            h = layers_[i]->forward(h);
        }
    }
    return h;
}

}  // namespace xgrad
