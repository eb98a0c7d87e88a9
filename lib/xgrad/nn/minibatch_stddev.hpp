// The minibatch standard-deviation feature (Karras et al. 2018): lets a
// discriminator see how varied a batch is, which discourages a generator
// from collapsing onto few samples.
#pragma once

#include <xgrad/nn/module.hpp>

namespace xgrad {

// For x (N, F, ...): the standard deviation over the batch of every feature
// (sqrt of the biased variance + eps), averaged over all features into one
// number s, appended as one more feature (or channel, along axis 1) holding
// s everywhere: (N, F, ...) -> (N, F + 1, ...). Built from xgrad's ops, so
// its gradient is exact.
Var minibatch_stddev(const Var& x, float eps = 1e-8f);

class MinibatchStddev : public Module {
public:
    explicit MinibatchStddev(float eps = 1e-8f) : eps_(eps) {}
    Var forward(const Var& x) override { return minibatch_stddev(x, eps_); }

private:
    float eps_;
};

}  // namespace xgrad
