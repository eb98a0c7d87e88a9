// Modules: layers that own parameters, and their composition.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <xgrad/ops.hpp>
#include <xgrad/core/random.hpp>
#include <xgrad/core/archive.hpp>

namespace xgrad {

using NamedParameters = std::vector<std::pair<std::string, Var>>;

class Module {
public:
    virtual ~Module() = default;
    virtual Var forward(const Var& x) = 0;
    Var operator()(const Var& x) { return forward(x); }

    // Parameters with stable names ("0.weight", "0.bias", ...), in a fixed order.
    NamedParameters named_parameters() const;
    std::vector<Var> parameters() const;
    void zero_grad();
    // Freezing sets requires_grad to false on every parameter of this
    // module: backward then computes no gradient for them (at no cost) and
    // optimizers leave them alone; nothing else is affected.
    void freeze() { set_requires_grad(false); }
    void unfreeze() { set_requires_grad(true); }
    void set_requires_grad(bool requires);
    // Training mode (the default) or evaluation mode, for layers that differ.
    virtual void train(bool training) { training_ = training; }
    bool training() const { return training_; }

    // Copies the parameters into / out of an archive under `prefix`.
    void save(Archive& archive, const std::string& prefix = "") const;
    // Throws if an entry is missing or has another shape.
    void load(const Archive& archive, const std::string& prefix = "");

    // Appends this module's parameters, names prefixed; override in modules that own any.
    virtual void collect_parameters(const std::string& prefix, NamedParameters& out) const;

private:
    bool training_ = true;
};

enum class Init {
    xavier_uniform,  // U(-a, a), a = sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio 2010)
    he_normal,       // N(0, 1/sqrt(fan_in/2)): the reference GAN's initialisation
};

// y = x . weight + bias, weight (in, out), bias (1, out) zero-initialised.
class Linear : public Module {
public:
    Linear(std::size_t in, std::size_t out, Rng& rng, Init init = Init::xavier_uniform);
    Var forward(const Var& x) override { return linear(x, weight, bias); }
    Var weight, bias;
    void collect_parameters(const std::string& prefix, NamedParameters& out) const override;
};

class ReLU : public Module {
public:
    Var forward(const Var& x) override { return relu(x); }
};
class LeakyReLU : public Module {
public:
    explicit LeakyReLU(float negative_slope = 0.2f) : slope_(negative_slope) {}
    Var forward(const Var& x) override { return leaky_relu(x, slope_); }

private:
    float slope_;
};
class Sigmoid : public Module {
public:
    Var forward(const Var& x) override { return sigmoid(x); }
};
class Tanh : public Module {
public:
    Var forward(const Var& x) override { return tanh(x); }
};

// Inverted dropout (see xgrad::dropout) while training(); the identity in
// evaluation mode (train(false)), where it draws nothing.
// It draws its masks from an Rng it is given rather than one it owns: the
// training loop's stream then decides every mask, and saving that one
// stream's state (as a checkpoint does) is enough to resume bit-exactly.
// `rng` must outlive the module.
class Dropout : public Module {
public:
    // Throws std::invalid_argument unless 0 <= p < 1.
    Dropout(float p, Rng& rng);
    Var forward(const Var& x) override;
    float p() const { return p_; }

private:
    float p_;
    Rng& rng_;
};

// Applies its layers in order. Layer i's parameters are named "i.<name>".
class Sequential : public Module {
public:
    template <class M, class... Args>
    M& add(Args&&... args) {
        layers_.push_back(std::make_unique<M>(std::forward<Args>(args)...));
        return static_cast<M&>(*layers_.back());
    }
    Var forward(const Var& x) override;
    void train(bool training) override;
    std::size_t size() const { return layers_.size(); }
    Module& operator[](std::size_t i) { return *layers_.at(i); }
    void collect_parameters(const std::string& prefix, NamedParameters& out) const override;

private:
    std::vector<std::unique_ptr<Module>> layers_;
};

// Sets requires_grad on each of `parameters`: freezing a cached parameter
// list this way allocates nothing (Module::freeze() builds the list anew).
void set_requires_grad(const std::vector<Var>& parameters, bool requires);

}  // namespace xgrad
