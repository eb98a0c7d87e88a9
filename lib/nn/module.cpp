#include <xgrad/nn/module.hpp>

#include <cmath>
#include <stdexcept>
#include <string>

namespace xgrad {

NamedParameters Module::named_parameters() const {
    NamedParameters out;
    collect_parameters("", out);
    return out;
}

std::vector<Var> Module::parameters() const {
    std::vector<Var> out;
    for (auto& [name, p] : named_parameters()) out.push_back(p);
    return out;
}

void Module::collect_parameters(const std::string&, NamedParameters&) const {}

void Module::zero_grad() {
    for (Var& p : parameters()) p.zero_grad();
}

void Module::set_requires_grad(bool requires) { xgrad::set_requires_grad(parameters(), requires); }

void Module::save(Archive& archive, const std::string& prefix) const {
    for (const auto& [name, p] : named_parameters()) archive.put(prefix + name, p.value());
}

void Module::load(const Archive& archive, const std::string& prefix) {
    const NamedParameters parameters = named_parameters();
    // Every entry is checked before any is copied: a failed load changes nothing.
    for (const auto& [name, p] : parameters) {
        const Tensor& stored = archive.tensor(prefix + name);
        if (shape_of(stored) != p.shape()) {
            throw ShapeError("xgrad: parameter '" + prefix + name + "' is " + shape_string(p.shape()) + " but the archive holds " +
                             shape_string(stored));
        }
    }
    for (auto [name, p] : parameters) p.mutable_value() = archive.tensor(prefix + name);
}

Linear::Linear(std::size_t in, std::size_t out, Rng& rng, Init init) {
    Tensor w({in, out});
    if (init == Init::xavier_uniform) {
        const float a = std::sqrt(6.f / static_cast<float>(in + out));
        rng.fill_uniform(w, -a, a);
    } else {
        rng.fill_normal(w, 0.f, 1.f / std::sqrt(static_cast<float>(in) / 2.f));
    }
    weight = Var(std::move(w), true);
    bias = Var(Tensor({1, out}, 0.f), true);
}

void Linear::collect_parameters(const std::string& prefix, NamedParameters& out) const {
    out.emplace_back(prefix + "weight", weight);
    out.emplace_back(prefix + "bias", bias);
}

Dropout::Dropout(float p, Rng& rng) : p_(p), rng_(rng) {
    if (!(p >= 0.f && p < 1.f)) {
        throw std::invalid_argument("xgrad::Dropout: the drop probability p = " + std::to_string(p) + " must be in [0, 1)");
    }
}

Var Dropout::forward(const Var& x) { return training() ? dropout(x, p_, rng_) : x; }

Var Sequential::forward(const Var& x) {
    Var h = x;
    for (auto& layer : layers_) h = layer->forward(h);
    return h;
}

void Sequential::train(bool training) {
    Module::train(training);
    for (auto& layer : layers_) layer->train(training);
}

void Sequential::collect_parameters(const std::string& prefix, NamedParameters& out) const {
    for (std::size_t i = 0; i < layers_.size(); ++i) layers_[i]->collect_parameters(prefix + std::to_string(i) + ".", out);
}

void set_requires_grad(const std::vector<Var>& parameters, bool requires) {
    for (Var p : parameters) p.set_requires_grad(requires);
}

}  // namespace xgrad
