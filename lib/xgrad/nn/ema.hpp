// Weight averaging: an exponential moving average of a module's parameters,
// the usual way to get better samples from a GAN's generator (the averaged
// weights are evaluated, the raw ones keep training).
#pragma once

#include <string>
#include <vector>

#include <xgrad/core/archive.hpp>
#include <xgrad/nn/module.hpp>

namespace xgrad {

class EmaWeights {
public:
    // Averages the parameters of `module` (which must outlive this), starting
    // from their current values. Throws std::invalid_argument unless
    // 0 <= decay < 1.
    EmaWeights(const Module& module, float decay);

    // After each optimizer step: average = d * average + (1 - d) * current,
    // with d = min(decay, (1 + t) / (10 + t)) at the t-th update (t = 0, 1,
    // ...): a warm-up (TensorFlow's ExponentialMovingAverage with num_updates)
    // so that the first averages are not dominated by the initial weights.
    void update();
    long updates() const { return updates_; }
    float decay() const { return decay_; }

    // Writes the averaged parameters into `target`, a module of the same
    // architecture (another instance, or the trained module itself); its
    // buffers are copied from the averaged module as they are. Throws
    // ShapeError naming the parameter when the architectures differ.
    void copy_to(Module& target) const;

    // The averages and the update count under `prefix`; load is all or nothing.
    // copy_to, save and load throw std::logic_error when the module's
    // parameters are no longer those it had at construction (a layer added
    // since has no average).
    void save(Archive& archive, const std::string& prefix) const;
    void load(const Archive& archive, const std::string& prefix);

private:
    // Throws std::logic_error when `now` (the module's parameters) is not
    // the list the averages were made for.
    void check_module(const char* call, const NamedVars& now) const;

    const Module& module_;
    std::vector<Var> parameters_;  // the module's, listed once: update() allocates nothing
    float decay_;
    long updates_ = 0;
    std::vector<Tensor> average_;
};

}  // namespace xgrad
