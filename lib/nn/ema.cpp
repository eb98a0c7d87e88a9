#include <xgrad/nn/ema.hpp>

#include <algorithm>
#include <stdexcept>
#include <string>

#include <xtensor/xnoalias.hpp>

#include <xgrad/core/parallel.hpp>

namespace xgrad {

EmaWeights::EmaWeights(const Module& module, float decay) : module_(module), parameters_(module.parameters()), decay_(decay) {
    if (!(decay >= 0.f && decay < 1.f)) {
        throw std::invalid_argument("xgrad::EmaWeights: decay " + std::to_string(decay) + " (expected 0 <= decay < 1)");
    }
    for (const Var& p : parameters_) average_.push_back(p.value());
}

void EmaWeights::check_module(const char* call, const NamedVars& now) const {
    // The averages are those of the parameters listed at construction; a
    // parameter added (or replaced) since then has none.
    bool same = now.size() == parameters_.size();
    for (std::size_t i = 0; same && i < now.size(); ++i) same = &now[i].second.value() == &parameters_[i].value();
    if (!same) {
        throw std::logic_error(std::string("xgrad::EmaWeights::") + call + ": the module has " + std::to_string(now.size()) +
                               " parameters, it had " + std::to_string(parameters_.size()) +
                               " when the averages were made (parameters added or replaced since): make the EmaWeights "
                               "after the module is complete");
    }
}

void EmaWeights::update() {
    const float d = std::min(decay_, static_cast<float>(double(1 + updates_) / double(10 + updates_)));
    for (std::size_t i = 0; i < parameters_.size(); ++i) {
        const float* p = parameters_[i].value().data();
        float* a = average_[i].data();
        // Split over the threads: on two, the main thread did this alone.
        parallel_for(average_[i].size(), kBlockElements, [&](std::size_t begin, std::size_t end) {
            for (std::size_t k = begin; k < end; ++k) a[k] = d * a[k] + (1.f - d) * p[k];
        });
    }
    ++updates_;
}

void EmaWeights::copy_to(Module& target) const {
    const NamedVars source = module_.named_parameters(), into = target.named_parameters();
    check_module("copy_to", source);
    if (source.size() != into.size()) {
        throw ShapeError("xgrad::EmaWeights::copy_to: the target has " + std::to_string(into.size()) +
                         " parameters, the averaged module " + std::to_string(source.size()));
    }
    for (std::size_t i = 0; i < into.size(); ++i) {
        if (into[i].second.shape() != average_[i].shape()) {
            throw ShapeError("xgrad::EmaWeights::copy_to: parameter '" + into[i].first + "' is " +
                             shape_string(into[i].second.shape()) + ", its average " + shape_string(average_[i]));
        }
    }
    if (&target != &module_) {
        Archive buffers;
        for (const auto& [name, b] : module_.named_buffers()) buffers.put(name, b.value());
        for (auto [name, b] : target.named_buffers()) {
            if (buffers.contains(name) && buffers.tensor(name).shape() == b.shape())
                xt::noalias(b.mutable_value()) = buffers.tensor(name);
        }
    }
    for (std::size_t i = 0; i < into.size(); ++i) {
        Var p = into[i].second;
        xt::noalias(p.mutable_value()) = average_[i];
    }
}

void EmaWeights::save(Archive& archive, const std::string& prefix) const {
    const NamedVars parameters = module_.named_parameters();
    check_module("save", parameters);
    for (std::size_t i = 0; i < parameters.size(); ++i) archive.put(prefix + parameters[i].first, average_[i]);
    archive.put_integer(prefix + "updates", updates_);
}

void EmaWeights::load(const Archive& archive, const std::string& prefix) {
    const NamedVars parameters = module_.named_parameters();
    check_module("load", parameters);
    for (std::size_t i = 0; i < parameters.size(); ++i) {
        const Tensor& stored = archive.tensor(prefix + parameters[i].first);
        if (stored.shape() != average_[i].shape()) {
            throw ShapeError("xgrad::EmaWeights: average '" + prefix + parameters[i].first + "' is " + shape_string(stored) +
                             ", expected " + shape_string(average_[i]));
        }
    }
    const long updates = archive.integer(prefix + "updates");
    for (std::size_t i = 0; i < parameters.size(); ++i) xt::noalias(average_[i]) = archive.tensor(prefix + parameters[i].first);
    updates_ = updates;
}

}  // namespace xgrad
