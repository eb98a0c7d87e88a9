// The small data-parallel training run shared by tests/test_distributed.cpp
// (in-process comparisons) and tests/mpi_worker.cpp (the program that the
// process tests launch with mpirun): a 2-layer MLP (16-32 tanh-1) learning a
// synthetic binary classification with Adam.
//
// Every rank builds the same data set and initial net from the seed and
// draws the same global batch of sample indices from the same stream each
// step, then computes only its own slice (DistributedSampler): N ranks
// together compute the global batch, as one process would.
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <xgrad.hpp>
#include <xgrad/distributed.hpp>

namespace test {

class DataParallelMlp {
public:
    static constexpr std::size_t kInputs = 16, kHidden = 32, kSamples = 512;

    // rank and ranks: which slice of each global batch this object computes.
    DataParallelMlp(std::uint64_t seed, std::size_t global_batch, int rank, int ranks)
        : rng_(seed),
          data_(xgrad::Tensor::from_shape({kSamples, kInputs})),
          labels_(xgrad::Tensor::from_shape({kSamples})),
          sampler_(global_batch, rank, ranks),
          indices_(global_batch) {
        xgrad::Rng data_rng(seed + 1000);
        data_rng.fill_normal(data_, 0.f, 1.f);
        for (std::size_t i = 0; i < kSamples; ++i) {
            // A nonlinear rule (the sign of a product): the net has to learn.
            labels_(i) = data_(i, 0) * data_(i, 1) + 0.5f * data_(i, 2) > 0.f ? 1.f : 0.f;
        }
        net.add<xgrad::Linear>(kInputs, kHidden, rng_);
        net.add<xgrad::Tanh>();
        net.add<xgrad::Linear>(kHidden, 1, rng_);
        adam = std::make_unique<xgrad::Adam>(net.parameters(), xgrad::AdamOptions{1e-2f});
    }

    // One training step: the next global batch, this rank's loss and
    // gradients, `reduce` (if any) between backward and the optimizer step.
    // Returns this rank's loss (the mean over its slice).
    float step(xgrad::GradientAllreduce* reduce) {
        draw_global_batch();
        adam->zero_grad();
        const float loss = forward_backward(sampler_);
        if (reduce) reduce->average();
        adam->step();
        ++steps_;
        return loss;
    }

    // What `slices` ranks compute in one step with ReduceOrder::rank_order,
    // done by one process: each slice's gradients on their own, then summed
    // in slice order ((g0 + g1) + g2 ...), times 1/slices, and the optimizer
    // step. Returns the mean of the slices' losses.
    float sliced_step(int slices) {
        draw_global_batch();
        const std::vector<xgrad::Var> parameters = net.parameters();
        std::vector<xgrad::Tensor> sums;
        double loss = 0;
        for (int s = 0; s < slices; ++s) {
            adam->zero_grad();
            loss += forward_backward(xgrad::DistributedSampler(indices_.size(), s, slices));
            for (std::size_t i = 0; i < parameters.size(); ++i) {
                if (s == 0) {
                    sums.push_back(parameters[i].grad());
                } else {
                    sums[i] += parameters[i].grad();
                }
            }
        }
        const float scale = 1.f / static_cast<float>(slices);
        for (std::size_t i = 0; i < parameters.size(); ++i) {
            xgrad::Var p = parameters[i];
            xt::noalias(p.mutable_grad()) = sums[i] * scale;
        }
        adam->step();
        ++steps_;
        return static_cast<float>(loss / slices);
    }

    long steps() const { return steps_; }

    // The whole training state: net, Adam, step count, random stream.
    void save(xgrad::Archive& archive) const {
        net.save(archive, "net.");
        adam->save(archive, "adam.");
        archive.put_text("steps", std::to_string(steps_));
        archive.put_text("rng", rng_.state());
    }
    void load(const xgrad::Archive& archive) {
        net.load(archive, "net.");
        adam->load(archive, "adam.");
        steps_ = std::stol(archive.text("steps"));
        rng_.set_state(archive.text("rng"));
    }

    xgrad::Sequential net;
    std::unique_ptr<xgrad::Adam> adam;

private:
    // The same indices on every rank: drawn from the same stream.
    void draw_global_batch() {
        for (std::size_t& i : indices_) i = rng_.below(kSamples);
    }

    float forward_backward(const xgrad::DistributedSampler& part) {
        const std::size_t n = part.local_batch();
        if (!x_.defined() || x_.shape()[0] != n) {
            x_ = xgrad::Var(xgrad::Tensor::from_shape({n, kInputs}));
            y_ = xgrad::Var(xgrad::Tensor::from_shape({n}));
        }
        const std::size_t* mine = part.local(indices_);
        xgrad::Tensor& x = x_.mutable_value();
        xgrad::Tensor& y = y_.mutable_value();
        for (std::size_t r = 0; r < n; ++r) {
            std::memcpy(x.data() + r * kInputs, data_.data() + mine[r] * kInputs, kInputs * sizeof(float));
            y(r) = labels_(mine[r]);
        }
        const xgrad::Var loss = xgrad::bce_with_logits(xgrad::flatten(net(x_), 0), y_);
        xgrad::backward(loss);
        return loss.item();
    }

    xgrad::Rng rng_;
    xgrad::Tensor data_, labels_;
    xgrad::DistributedSampler sampler_;
    std::vector<std::size_t> indices_;
    xgrad::Var x_, y_;
    long steps_ = 0;
};

}  // namespace test
