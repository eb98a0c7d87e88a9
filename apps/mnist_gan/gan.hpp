// The adversarial nets of Goodfellow et al. (2014), written with xgrad's
// generic autograd: this file holds only forward code and backward() calls,
// no gradient formula.
//
// D maps a sample to a logit (sigmoid gives the probability that the sample
// came from the data); G maps noise z ~ U[-1,1]^z_dim to a sample. Each
// training step is Algorithm 1 of the paper: k discriminator updates, then
// one generator update.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <xgrad/nn.hpp>
#include <xgrad/optim.hpp>
#include <xgrad/core/random.hpp>

namespace gan {

// The generator's objective. The paper's minimax game descends
// log(1 - D(G(z))), whose gradient vanishes while D confidently rejects
// early samples; the non-saturating form ascends log D(G(z)) instead (same
// fixed point, strong early gradients), which the paper recommends.
enum class GeneratorLoss { non_saturating, minimax };
enum class OptimizerKind { adam, sgd };

struct GanConfig {
    std::size_t data_dim = 784;
    std::size_t z_dim = 100;
    std::size_t hidden = 128;
    std::size_t batch = 128;  // m in the paper
    std::size_t k = 1;        // discriminator updates per generator update
    OptimizerKind optimizer = OptimizerKind::adam;
    float lr = 1e-3f;
    float beta1 = 0.9f, beta2 = 0.999f;
    GeneratorLoss g_loss = GeneratorLoss::non_saturating;
    float d_leaky_slope = 0.f;   // 0: ReLU in D; > 0: LeakyReLU with this slope
    float real_label = 1.f;      // < 1: one-sided label smoothing for D
    bool sigmoid_output = true;  // G's output squashed to [0,1] (images); false for unbounded data
    xgrad::Init init = xgrad::Init::he_normal;

    // The architecture-defining fields as text: a checkpoint is only
    // resumed into a GAN of the same shape.
    std::string architecture() const;
};

// Exactly the paper's MNIST experiment as specified (README, mnist_gan):
// D 784-128 ReLU-1, G 100-128 ReLU-784 sigmoid, Adam(1e-3, 0.9, 0.999), k = 1, m = 128.
GanConfig reference_preset();
// What trains better on MNIST here (see README "Presets"): wider nets,
// LeakyReLU in D, Adam(2e-4, beta1 0.5), one-sided label smoothing 0.9.
GanConfig default_preset();
// "reference" or "default"; throws std::invalid_argument naming the preset otherwise.
GanConfig preset(const std::string& name);

// Where real samples come from: fills `batch` (m, data_dim) using `rng`.
class DataSource {
public:
    virtual ~DataSource() = default;
    virtual std::size_t dim() const = 0;
    virtual void sample(xgrad::Tensor& batch, xgrad::Rng& rng) = 0;
};

struct StepStats {
    float d_loss = 0;  // BCE(D(x), real label) + BCE(D(G(z)), 0), last D update
    float g_loss = 0;  // the generator's loss as minimised (see GeneratorLoss)
    float d_real = 0;  // mean D(x) over the last D update's real batch
    float d_fake = 0;  // mean D(G(z)) over the generator update's batch
};

class Gan {
public:
    Gan(const GanConfig& config, std::uint64_t seed);

    // One step of Algorithm 1: k D updates, then one G update.
    StepStats step(DataSource& data);
    // Its two phases (step() counts as one step; these alone do not). Each
    // fills its half of `stats`.
    void discriminator_step(DataSource& data, StepStats& stats);
    void generator_step(StepStats& stats);

    // The losses as differentiable functions of the current parameters.
    // D's: -(1/m) sum[log D(x) + log(1 - D(G(z)))] with G's output taken as
    // given (`fake` carries no graph into G). Optionally reports mean D(x).
    xgrad::Var discriminator_loss(const xgrad::Var& real, const xgrad::Var& fake, float* mean_d_real = nullptr);
    // G's: through D, by the generic backward(); see GeneratorLoss.
    xgrad::Var generator_loss(const xgrad::Var& noise);

    // z ~ U[-1,1], from the training random stream.
    void sample_noise(xgrad::Tensor& noise);
    // G(noise) without recording a graph.
    xgrad::Var generate(const xgrad::Var& noise);
    // V(D, G) = E[log D(x)] + E[log(1 - D(G(z)))] estimated over `batches`
    // fresh batches drawn from `rng` (not the training stream, so evaluating
    // does not change what training does next); -log 4 at the optimum.
    double value_estimate(DataSource& data, std::size_t batches, xgrad::Rng& rng);

    // Both nets, both optimizers, the step count and the random state.
    void save(xgrad::Archive& archive) const;
    // Throws std::runtime_error if the archive holds another architecture.
    void load(const xgrad::Archive& archive);

    const GanConfig& config() const { return config_; }
    long steps_done() const { return steps_done_; }
    xgrad::Sequential& generator() { return generator_; }
    xgrad::Sequential& discriminator() { return discriminator_; }
    xgrad::Rng& rng() { return rng_; }

private:
    xgrad::Var generator_objective(const xgrad::Var& fake_logits) const;

    GanConfig config_;
    xgrad::Rng rng_;
    xgrad::Sequential generator_, discriminator_;
    std::vector<xgrad::Var> d_parameters_;
    std::unique_ptr<xgrad::Optimizer> g_optimizer_, d_optimizer_;
    // Persistent inputs, refilled in place every step: no allocation.
    xgrad::Var real_, noise_;
    long steps_done_ = 0;
};

}  // namespace gan
