// Modules: layers that own parameters (trained) and buffers (state that is
// saved but not trained, such as running statistics), and their composition.
//
// A module registers its parameters, buffers and child modules by name in
// its constructor; names are joined with '.' down the tree ("0.weight",
// "body.1.running_mean"), in registration order. Modules refer to their
// members by address, so they can be neither copied nor moved.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <xgrad/core/archive.hpp>
#include <xgrad/core/var.hpp>

namespace xgrad {

using NamedVars = std::vector<std::pair<std::string, Var>>;

class Module {
public:
    Module() = default;
    virtual ~Module() = default;
    Module(const Module&) = delete;
    Module& operator=(const Module&) = delete;

    virtual Var forward(const Var& x) = 0;
    Var operator()(const Var& x) { return forward(x); }

    NamedVars named_parameters() const;
    std::vector<Var> parameters() const;
    NamedVars named_buffers() const;
    std::vector<Var> buffers() const;

    void zero_grad();
    // Freezing sets requires_grad to false on every parameter of this
    // module: backward then computes no gradient for them (at no cost) and
    // optimizers leave them alone; nothing else is affected.
    void freeze() { set_requires_grad(false); }
    void unfreeze() { set_requires_grad(true); }
    void set_requires_grad(bool requires);

    // Training mode (the default) or evaluation mode, for this module and
    // every module below it: batch norm uses batch statistics and dropout
    // drops only while training.
    void train(bool training = true);
    void eval() { train(false); }
    bool is_training() const { return training_; }

    // Calls f on this module and every module below it, parents first.
    void visit(const std::function<void(Module&)>& f);

    // Copies the parameters and buffers into / out of an archive under `prefix`.
    void save(Archive& archive, const std::string& prefix = "") const;
    // Throws if an entry is missing or has another shape; every entry is
    // checked before any is copied, so a failed load changes nothing.
    void load(const Archive& archive, const std::string& prefix = "");

protected:
    // `parameter` and `buffer` are members of the registering module (Vars
    // that it keeps and uses); a parameter should require a gradient.
    void register_parameter(const std::string& name, Var& parameter);
    void register_buffer(const std::string& name, Var& buffer);
    void register_module(const std::string& name, Module& child);

private:
    void collect(const std::string& prefix, NamedVars& parameters, NamedVars* buffers) const;

    std::vector<std::pair<std::string, Var*>> parameters_, buffers_;
    std::vector<std::pair<std::string, Module*>> children_;
    bool training_ = true;
};

// While an EvaluationMode lives, `module` and every module below it are in
// evaluation mode (batch norm normalises with its running statistics,
// dropout passes values through); at the end they all get back the mode
// `module` had.
class EvaluationMode {
public:
    explicit EvaluationMode(Module& module) : module_(module), was_training_(module.is_training()) { module_.eval(); }
    ~EvaluationMode() { module_.train(was_training_); }
    EvaluationMode(const EvaluationMode&) = delete;
    EvaluationMode& operator=(const EvaluationMode&) = delete;

private:
    Module& module_;
    bool was_training_;
};

// Applies its layers in order. Layer i's names are prefixed "i.". A
// BatchNorm (1d, 2d) or a Conv2d followed by a ReLU or LeakyReLU (slope >=
// 0) runs with it as one op (BatchNorm::forward_rectified,
// Conv2d::forward_rectified): the same values, in fewer passes over memory.
// Subclasses of these run as they are written.
class Sequential : public Module {
public:
    template <class M, class... Args>
    M& add(Args&&... args) {
        auto layer = std::make_unique<M>(std::forward<Args>(args)...);
        M& added = *layer;
        add(std::move(layer));
        return added;
    }
    void add(std::unique_ptr<Module> layer);
    Var forward(const Var& x) override;
    std::size_t size() const { return layers_.size(); }
    Module& operator[](std::size_t i) { return *layers_.at(i); }

private:
    std::vector<std::unique_ptr<Module>> layers_;
};

}  // namespace xgrad
