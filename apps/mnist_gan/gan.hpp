// The adversarial nets of Goodfellow et al. (2014), written with xgrad's
// generic autograd: this file holds only forward code and backward() calls,
// no gradient formula.
//
// D maps a sample to a logit (sigmoid gives the probability that the sample
// came from the data); G maps noise z ~ U[-1,1]^z_dim to a sample. Each
// training step is Algorithm 1 of the paper: k discriminator updates, then
// one generator update. The nets are fully connected (the paper's) or
// convolutional (DCGAN, Radford et al. 2016); see presets.hpp.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <xgrad.hpp>
#include <xgrad/distributed.hpp>

#include "data.hpp"

namespace gan {

// The generator's objective. The paper's minimax game descends
// log(1 - D(G(z))), whose gradient vanishes while D confidently rejects
// early samples; the non-saturating form ascends log D(G(z)) instead (same
// fixed point, strong early gradients), which the paper recommends.
enum class GeneratorLoss { non_saturating, minimax };
// The game: the paper's (D a classifier, the losses above); the hinge one
// (Lim & Ye 2017; Miyato et al. 2018): D's scores unbounded, D minimises
// E[relu(1 - D(x))] + E[relu(1 + D(G(z)))], G minimises -E[D(G(z))]; or the
// Wasserstein one of WGAN-GP (Gulrajani et al. 2017): D a critic of
// unbounded scores, D minimises E[D(G(z))] - E[D(x)], G minimises
// -E[D(G(z))], and a gradient penalty keeps D 1-Lipschitz.
enum class Objective { standard, hinge, wasserstein };
enum class OptimizerKind { adam, sgd };
enum class Architecture { mlp, dcgan };

struct GanConfig {
    std::string preset = "custom";  // the preset it came from (a checkpoint resumes only under the same)
    Architecture architecture = Architecture::mlp;
    std::size_t data_dim = 784;  // dcgan: side x side images
    std::size_t z_dim = 100;
    // > 0: a conditional GAN over this many classes (Mirza & Osindero 2014,
    // "Conditional Generative Adversarial Nets"). G's input is z followed by
    // the one-hot of the class asked for, so that the first layer's weights
    // for those columns are a learned label embedding added to G's first
    // activation; D is a projection discriminator (Miyato & Koyama 2018):
    // its logit plus the inner product of a label embedding with its
    // features. dcgan only. 0: unconditional.
    std::size_t classes = 0;
    std::size_t hidden = 128;   // mlp: the width of both hidden layers
    std::size_t channels = 64;  // dcgan: D's first convolution; D's second and G's first have twice as many
    std::size_t batch = 128;    // m in the paper
    std::size_t k = 1;          // discriminator updates per generator update
    long steps = 20000;         // the run length the preset is meant for (mnist_gan --steps overrides)
    OptimizerKind optimizer = OptimizerKind::adam;
    float lr = xgrad::AdamOptions{}.lr;  // the library's Adam default (1e-3), as in the paper's setup
    float beta1 = xgrad::AdamOptions{}.beta1, beta2 = xgrad::AdamOptions{}.beta2;
    GeneratorLoss g_loss = GeneratorLoss::non_saturating;
    Objective objective = Objective::standard;
    // > 0: the zero-centred gradient penalty R1 (Mescheder et al. 2018),
    // gamma/2 E||d D(x) / d x||^2 over real samples, added to D's loss.
    float r1_gamma = 0.f;
    // R1 applied lazily: at every r1_every-th D update, its loss scaled by
    // r1_every (StyleGAN2's lazy regularisation, Karras et al. 2020).
    long r1_every = 16;
    // > 0 (wasserstein): the WGAN-GP penalty lambda E(||d D(x^) / d x^|| - 1)^2
    // at random points x^ between real and generated samples.
    float gp_lambda = 0.f;
    bool d_batch_norm = true;    // dcgan: batch norm after D's second convolution (a WGAN-GP critic has none)
    float d_leaky_slope = 0.f;   // 0: ReLU in D; > 0: LeakyReLU with this slope
    float real_label = 1.f;      // < 1: one-sided label smoothing for D
    bool sigmoid_output = true;  // G's output squashed to [0,1] (images); false for unbounded data
    xgrad::Init init = xgrad::Init::he_normal;
    bool d_spectral_norm = false;     // every weight of D divided by its spectral norm
    bool d_minibatch_stddev = false;  // mlp: the batch's stddev appended to D's hidden layer
    float ema_decay = 0.f;            // > 0: keep an averaged generator (EmaWeights) with this decay
    bool sample_averaged = true;      // with one: grids and samples from it (mnist_gan --ema / --no-ema override)
    // With batch norm in G: draw samples with batch statistics (train mode,
    // running statistics untouched) instead of the running statistics.
    bool sample_with_batch_stats = false;
    // < 1: every image drawn for output (grids, samples, the interpolation,
    // the quality measurements) from z ~ U[-1,1]^z_dim scaled by this, the
    // truncation trick (Brock et al. 2019, "Large Scale GAN Training"):
    // each image more typical of its class, the set a little less varied.
    // Training draws its noise untruncated.
    float sample_truncation = 1.f;
    // Differentiable augmentation (Zhao et al. 2020) of every input of D:
    // the real and the generated batch of D's update, the generated batch of
    // G's (its gradient flows through the augmentation). Its draws come from
    // a stream of their own, so a GAN without it trains as before. Needs
    // square images (data_dim = side x side).
    xgrad::AugmentPolicy augment;

    // The architecture-defining fields as text: a checkpoint is only
    // resumed into a GAN of the same shape.
    std::string architecture_text() const;
    // The width of G's input, which this program calls its noise: z, then
    // (conditional) the class's one-hot.
    std::size_t noise_dim() const { return z_dim + classes; }
};

// Row `row` of `noise` (rows of GanConfig::noise_dim() values) asks for
// class `label`: its last `classes` values become that class's one-hot.
void set_class(xgrad::Tensor& noise, std::size_t row, std::size_t classes, std::size_t label);
// Every value of `noise` from U[-1,1], then times `truncation`
// (GanConfig::sample_truncation); a conditional GAN's one-hot is set after.
void draw_noise(xgrad::Rng& rng, xgrad::Tensor& noise, float truncation = 1.f);
// The class row `row` of `noise` asks for (the one-hot's hot column).
std::size_t class_of(const xgrad::Tensor& noise, std::size_t row, std::size_t classes);

struct StepStats {
    float d_loss = 0;   // BCE(D(x), real label) + BCE(D(G(z)), 0), last D update (penalties included)
    float g_loss = 0;   // the generator's loss as minimised (see GeneratorLoss)
    float d_real = 0;   // mean D(x) over the last D update's real batch (hinge, wasserstein: D's mean score)
    float d_fake = 0;   // mean D(G(z)) over the generator update's batch (wasserstein: the same)
    float penalty = 0;  // the last gradient penalty computed (R1 as applied, or WGAN-GP's), before its weight
    bool stop = false;  // step(data, true) on any rank (one process: the argument)
};

// A conditional GAN's discriminator (gan.cpp).
class ProjectionDiscriminator;

class Gan {
public:
    Gan(const GanConfig& config, std::uint64_t seed);

    // One step of Algorithm 1: k D updates, then one G update. Distributed,
    // the statistics are the means over the global batch, and `stop` is
    // true on every rank when any rank passed stop_request (a Ctrl-C seen
    // by one rank stops all of them after the same step).
    StepStats step(DataSource& data, bool stop_request = false);
    // Its two phases (step() counts as one step; these alone do not). Each
    // fills its half of `stats`. Each changes only its own net: its
    // parameters and, with batch norm, its running statistics. Distributed,
    // generator_step also turns all of `stats` into the global means, and
    // stats.stop into whether any rank set it.
    void discriminator_step(DataSource& data, StepStats& stats);
    void generator_step(StepStats& stats);

    // The losses as differentiable functions of the current parameters.
    // D's: -(1/m) sum[log D(x) + log(1 - D(G(z)))] with G's output taken as
    // given (`fake` carries no graph into G); real and fake batches go
    // through D separately, as DCGAN implementations do (batch norm then
    // normalises each by its own statistics). Optionally reports mean D(x).
    // Hinge: mean relu(1 - D(x)) + mean relu(1 + D(G(z))). Wasserstein:
    // mean D(G(z)) - mean D(x). No penalty: see the two below. With
    // config().augment, D sees both batches augmented (real first, then
    // fake, each drawing from the augmentation's stream), as in training.
    // A conditional GAN's D sees each batch with its classes: `real_classes`
    // and `fake_noise` hold them as one-hot columns (see discriminate).
    xgrad::Var discriminator_loss(const xgrad::Var& real, const xgrad::Var& fake, float* mean_d_real = nullptr,
                                  const xgrad::Var& real_classes = {}, const xgrad::Var& fake_noise = {});
    // R1 at `real` (a leaf that requires a gradient, through whose graph
    // `real_logits` = D(real) was computed): gamma/2 mean_i ||d D(x_i) / d x_i||^2,
    // differentiable in D's parameters. By the generic backward, one order up.
    xgrad::Var r1_penalty(const xgrad::Var& real, const xgrad::Var& real_logits) const;
    // WGAN-GP at x^ = e x + (1 - e) G(z), e ~ U[0, 1] per sample from `rng`:
    // lambda mean_i (||d D(x^_i) / d x^_i|| - 1)^2.
    xgrad::Var gradient_penalty(const xgrad::Var& real, const xgrad::Var& fake, xgrad::Rng& rng);
    // G's: through D, by the generic backward(); see GeneratorLoss (hinge
    // and wasserstein: -mean D(G(z))). With config().augment, D sees G(z)
    // augmented, and the gradient reaches G through the augmentation.
    xgrad::Var generator_loss(const xgrad::Var& noise);
    // x as D sees it: augmented by config().augment (x itself without).
    // Flat (N, data_dim) rows in and out. Distributed, rank r's rows get the
    // draws one process gives rows [r*m/N, (r+1)*m/N) of the global batch.
    xgrad::Var augmented(const xgrad::Var& x);

    // z ~ U[-1,1] from `rng` (by default the training stream); for a
    // conditional GAN, each row's class uniformly from the same stream.
    void sample_noise(xgrad::Tensor& noise);
    void sample_noise(xgrad::Tensor& noise, xgrad::Rng& rng) const;
    // D's logits of `x` (rows of data_dim values); a conditional D's given
    // the classes in `labelled`'s one-hot columns (the noise, or real
    // labels laid out alike), an unconditional D ignores `labelled`.
    xgrad::Var discriminate(const xgrad::Var& x, const xgrad::Var& labelled);
    // G(noise) as trained (no graph; batch statistics untouched): the
    // samples of grids, samples.idx and the quality metrics. With `averaged`
    // and weight averaging on, from the averaged generator instead (its batch
    // statistics recomputed first, see recompute_averaged_statistics).
    xgrad::Var generate(const xgrad::Var& noise, bool averaged = false);
    // The net generate(noise, averaged) runs, its averaged weights brought up
    // to date (what --export writes as the generator).
    xgrad::Sequential& sampling_generator(bool averaged);
    bool has_averaged_generator() const { return ema_ != nullptr; }
    // V(D, G) = E[log D(x)] + E[log(1 - D(G(z)))] estimated over `batches`
    // fresh batches drawn from `rng` (not the training stream, so evaluating
    // does not change what training does next); -log 4 at the optimum.
    double value_estimate(DataSource& data, std::size_t batches, xgrad::Rng& rng);

    // Trains as one of `distributed`'s ranks (docs/distributed.md), from now
    // on: every rank draws the whole global batch of config().batch real
    // samples and noise from the same streams and computes the gradients of
    // its own rows (xgrad::DistributedSampler); the ranks average them
    // before each optimizer step. Rank 0's weights are broadcast. Call on
    // every rank before training; throws std::invalid_argument naming both
    // numbers when the ranks do not divide the batch. `distributed` must
    // outlive the GAN. `order`: how the gradients are summed (xgrad::ReduceOrder).
    void distribute(const xgrad::Distributed& distributed, xgrad::ReduceOrder order = xgrad::ReduceOrder::rank_order);
    // Seconds spent averaging gradients since distribute(): in all, and
    // inside the MPI calls only (which includes waiting for the slowest
    // rank); 0 with one process.
    double allreduce_seconds() const;
    double allreduce_mpi_seconds() const;
    // Batch norm's running statistics replaced by their mean over the ranks
    // (collective; nothing with one process, or when already done at this step). Each rank updates them from
    // its own rows; call before anything uses or saves them (grids,
    // samples, evaluation, checkpoints). The running statistics are linear
    // in the batch statistics, so averaging now and then gives what
    // averaging at every step would.
    void average_statistics();
    // Parameters of both nets: what must stay identical on every rank.
    std::vector<xgrad::Var> parameters() const;

    // Both nets, both optimizers, the averaged generator, the step count and
    // the random state.
    void save(xgrad::Archive& archive) const;
    // Throws std::runtime_error if the archive holds another preset or architecture.
    void load(const xgrad::Archive& archive);

    const GanConfig& config() const { return config_; }
    long steps_done() const { return steps_done_; }
    xgrad::Sequential& generator() { return generator_; }
    xgrad::Sequential& discriminator() { return discriminator_; }
    xgrad::Rng& rng() { return rng_; }
    // The augmentation and its random stream (saved in a checkpoint when it augments).
    xgrad::DiffAugment& augmentation() { return augment_; }

private:
    // StepStats' four means, summed over the ranks with G's gradients.
    static constexpr std::size_t kStatistics = 4;
    xgrad::Var generator_objective(const xgrad::Var& fake_logits) const;
    // The mean of D's outputs as StepStats reports them: mean D(x) as a
    // probability in the standard game, the mean score otherwise.
    float mean_output(const xgrad::Var& logits) const;
    // The game's D loss of batches as D sees them (augmented, if at all),
    // D run on the generated batch, then on the real one.
    xgrad::Var judged(const xgrad::Var& real_seen, const xgrad::Var& real_classes, const xgrad::Var& fake_seen,
                      const xgrad::Var& fake_noise, float* mean_d_real);
    // The game's D loss is the sum of these two: on D's logits of real and of generated samples.
    xgrad::Var real_objective(const xgrad::Var& real_logits) const;
    xgrad::Var fake_objective(const xgrad::Var& fake_logits) const;
    // The averaged weights copied into averaged_generator_, whose batch
    // statistics are then the average over 16 batches of fresh noise (a
    // stream of its own): averaging the running statistics along with the
    // weights does not give statistics that fit the averaged weights.
    void refresh_averaged_generator();

    GanConfig config_;
    xgrad::Rng rng_;
    xgrad::DiffAugment augment_;
    std::size_t side_ = 0;  // with augmentation: the images' side
    xgrad::Sequential generator_, discriminator_, averaged_generator_;
    std::vector<xgrad::BatchNorm*> g_norms_, d_norms_, averaged_norms_;
    std::vector<xgrad::Var> d_parameters_;
    std::unique_ptr<xgrad::Optimizer> g_optimizer_, d_optimizer_;
    std::unique_ptr<xgrad::EmaWeights> ema_;
    long averaged_at_ = -1;  // the step averaged_generator_ was last refreshed at
    // m samples of the data, and m noise vectors z (the training stream):
    // this rank's rows of them.
    // With its classes into real_classes_ for a conditional GAN.
    const xgrad::Var& real_batch(DataSource& data);
    const xgrad::Var& noise_batch();
    // Whether D update number `update` (counted from 0 over the run) applies R1.
    bool applies_r1(long update) const;
    // D's loss as its update minimises it, differentiated into D's
    // gradients (backward()), and its value: the game's, plus the
    // penalties the config asks for (R1 at every r1_every-th update,
    // WGAN-GP), whose last value goes into stats.penalty.
    float differentiate_discriminator_loss(xgrad::Var& real, const xgrad::Var& real_classes, const xgrad::Var& fake,
                                           const xgrad::Var& fake_noise, StepStats& stats);
    // G's gradients averaged over the ranks, with the step's statistics and
    // stop request in the same message (nothing in one process).
    void average_generator_gradients(StepStats& stats);

    // Persistent inputs, refilled in place every step: no allocation. mix_:
    // WGAN-GP's interpolation weights; interpolated_: its points;
    // real_classes_: the real batch's one-hot classes (conditional).
    xgrad::Var real_, noise_, mix_, interpolated_, real_classes_;
    ProjectionDiscriminator* projection_ = nullptr;  // discriminator_'s one module, for a conditional GAN
    long d_updates_ = 0;                             // D updates done (step() makes k of them)
    // Data-parallel training: this rank's rows of each batch, the gradients
    // averaged over the ranks, batch norm's running statistics shared. With
    // one process each of their calls is the identity or does nothing.
    xgrad::DataParallel parallel_;
    xgrad::DataParallel::Gradients d_gradients_, g_gradients_;
    long statistics_averaged_at_ = -1;  // the step average_statistics() last ran at
    // Distributed augmentation: zeros standing for the other ranks' rows
    // before and after this rank's, so that the draws are the global batch's.
    xgrad::Var rows_before_, rows_after_;
    std::vector<xgrad::Var> augment_pieces_;
    long steps_done_ = 0;
};

}  // namespace gan
