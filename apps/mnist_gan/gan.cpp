#include "gan.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <initializer_list>
#include <limits>
#include <optional>
#include <sstream>
#include <stdexcept>

#include "numbers.hpp"

namespace gan {

using xgrad::Tensor;
using xgrad::Var;

std::string GanConfig::architecture_text() const {
    std::ostringstream s;
    s << "data_dim=" << data_dim << " z_dim=" << z_dim;
    if (classes > 0) s << " classes=" << classes;
    if (architecture == Architecture::mlp) {
        s << " hidden=" << hidden << " d_activation=" << (d_leaky_slope > 0.f ? "leaky_relu" : "relu")
          << " g_output=" << (sigmoid_output ? "sigmoid" : "linear") << (d_minibatch_stddev ? " d_minibatch_stddev" : "");
    } else {
        s << " dcgan channels=" << channels;
    }
    if (architecture == Architecture::dcgan && !d_batch_norm) s << " d_no_batch_norm";
    s << (d_spectral_norm ? " d_spectral_norm" : "") << (ema_decay > 0.f ? " averaged_generator" : "")
      << " optimizer=" << (optimizer == OptimizerKind::adam ? "adam" : "sgd");
    return s.str();
}

namespace {

std::unique_ptr<xgrad::Optimizer> make_optimizer(const GanConfig& c, std::vector<Var> parameters) {
    if (c.optimizer == OptimizerKind::sgd) return std::make_unique<xgrad::SGD>(std::move(parameters), c.lr);
    xgrad::AdamOptions options;  // eps stays the library's
    options.lr = c.lr;
    options.beta1 = c.beta1;
    options.beta2 = c.beta2;
    return std::make_unique<xgrad::Adam>(std::move(parameters), options);
}

float mean_probability(const Tensor& logits) {
    double total = 0;
    for (float x : logits) total += 1.0 / (1.0 + std::exp(-double(x)));
    return static_cast<float>(total / double(logits.size()));
}

float mean_value(const Tensor& t) {
    double total = 0;
    for (float x : t) total += x;
    return static_cast<float>(total / double(t.size()));
}

// The augmentation's stream: the run's seed, but not the training stream's
// (a GAN without augmentation then draws exactly what it drew before).
constexpr std::uint64_t kAugmentSeed = 0x6a09e667f3bcc908ULL;

// The side of square images of data_dim pixels; 0 if they are not square.
std::size_t square_side(std::size_t data_dim) {
    const auto side = static_cast<std::size_t>(std::lround(std::sqrt(double(data_dim))));
    return side * side == data_dim ? side : 0;
}

// The images' side for an augmenting GAN (0 without augmentation).
std::size_t augmented_side(const GanConfig& c) {
    if (!c.augment.any()) return 0;
    const std::size_t side = square_side(c.data_dim);
    if (side == 0) {
        throw std::invalid_argument("augmentation needs square images; the data has " + std::to_string(c.data_dim) +
                                    " values per sample");
    }
    return side;
}

// While alive, the leaf requires a gradient (a batch differentiated for a penalty).
class DifferentiatedInput {
public:
    explicit DifferentiatedInput(Var& input) : input_(input) { input_.set_requires_grad(true); }
    ~DifferentiatedInput() {
        input_.set_requires_grad(false);
        input_.zero_grad();  // what backward() left there is not wanted, and must not pile up
    }
    DifferentiatedInput(const DifferentiatedInput&) = delete;
    DifferentiatedInput& operator=(const DifferentiatedInput&) = delete;

private:
    Var& input_;
};

void add_activation(xgrad::Sequential& net, float leaky_slope) {
    if (leaky_slope > 0.f) {
        net.add<xgrad::LeakyReLU>(leaky_slope);
    } else {
        net.add<xgrad::ReLU>();
    }
}

// D's layers normalised by their spectral norms, if the config asks, in
// the order given (each draws its power-iteration vector from rng).
void apply_spectral_norm(const GanConfig& c, xgrad::Rng& rng, std::initializer_list<xgrad::WeightedLayer*> layers) {
    if (!c.d_spectral_norm) return;
    for (xgrad::WeightedLayer* layer : layers) layer->apply_spectral_norm(rng);
}

// The paper's nets: one hidden layer each.
void build_mlp(const GanConfig& c, xgrad::Rng& rng, xgrad::Sequential& g, xgrad::Sequential& d) {
    g.add<xgrad::Linear>(c.z_dim, c.hidden, rng, c.init);
    g.add<xgrad::ReLU>();
    g.add<xgrad::Linear>(c.hidden, c.data_dim, rng, c.init);
    if (c.sigmoid_output) g.add<xgrad::Sigmoid>();

    auto& d_in = d.add<xgrad::Linear>(c.data_dim, c.hidden, rng, c.init);
    add_activation(d, c.d_leaky_slope);
    if (c.d_minibatch_stddev) d.add<xgrad::MinibatchStddev>();
    auto& d_out = d.add<xgrad::Linear>(c.hidden + (c.d_minibatch_stddev ? 1 : 0), 1, rng, c.init);
    apply_spectral_norm(c, rng, {&d_in, &d_out});
}

std::size_t image_side(const GanConfig& c) {
    const std::size_t side = square_side(c.data_dim);
    if (side == 0 || side % 4 != 0) {
        throw std::invalid_argument("the dcgan preset needs square images whose side is a multiple of 4; the data has " +
                                    std::to_string(c.data_dim) + " values per sample");
    }
    return side;
}

// DCGAN's D without its head: two strided convolutions from flat (N,
// side*side) rows to flat (N, features) rows. Returns the two, for
// spectral normalisation after the head is made (its draws come after theirs).
std::array<xgrad::WeightedLayer*, 2> add_dcgan_features(const GanConfig& c, xgrad::Rng& rng, xgrad::Sequential& d) {
    const auto side = static_cast<long>(image_side(c));
    const xgrad::Conv2dOptions down{2, 1};
    d.add<xgrad::Reshape>(xgrad::ShapeSpec{-1, 1, side, side});
    auto& conv1 = d.add<xgrad::Conv2d>(1, c.channels, 4, rng, down, c.init);
    add_activation(d, c.d_leaky_slope);
    auto& conv2 = d.add<xgrad::Conv2d>(c.channels, 2 * c.channels, 4, rng, down, c.init);
    if (c.d_batch_norm) d.add<xgrad::BatchNorm2d>(2 * c.channels);
    add_activation(d, c.d_leaky_slope);
    d.add<xgrad::Flatten>();
    return {&conv1, &conv2};
}

std::size_t dcgan_features(const GanConfig& c) {
    const std::size_t q = image_side(c) / 4;
    return 2 * c.channels * q * q;
}

}  // namespace

// The projection discriminator of Miyato & Koyama (2018): D(x, y) =
// head(phi(x)) + <embedding(y), phi(x)>, phi the unconditional D's
// features. Its input rows are x followed by y's one-hot, so that it is one
// module of one input like the others; the one-hot times the embedding
// matrix is the lookup embedding(y).
class ProjectionDiscriminator : public xgrad::Module {
public:
    ProjectionDiscriminator(const GanConfig& c, xgrad::Rng& rng)
        : data_dim_(c.data_dim),
          classes_(c.classes),
          convolutions_(add_dcgan_features(c, rng, features_)),
          head_(dcgan_features(c), 1, rng, c.init) {
        Tensor embedding = Tensor::from_shape({c.classes, dcgan_features(c)});
        xgrad::initialize(embedding, c.init, c.classes, dcgan_features(c), rng);
        embedding_ = Var(std::move(embedding), true);
        apply_spectral_norm(c, rng, {convolutions_[0], convolutions_[1], &head_});
        register_module("features", features_);
        register_module("head", head_);
        register_parameter("embedding", embedding_);
    }

    // The logits of images (N, data_dim) of the classes one_hot (N, classes).
    Var judge(const Var& images, const Var& one_hot) {
        const Var phi = features_(images);
        return head_(phi) + xgrad::sum(phi * xgrad::matmul(one_hot, embedding_), {1}, true);
    }
    // As a module of one input: rows of an image followed by its class's one-hot.
    Var forward(const Var& input) override {
        return judge(xgrad::narrow(input, 1, 0, data_dim_), xgrad::narrow(input, 1, data_dim_, classes_));
    }

private:
    std::size_t data_dim_, classes_;
    xgrad::Sequential features_;
    std::array<xgrad::WeightedLayer*, 2> convolutions_;
    xgrad::Linear head_;
    Var embedding_;
};

namespace {

// DCGAN: G upsamples a (2c, side/4, side/4) map twice by transposed
// convolutions, D downsamples twice by strided convolutions. Both take and
// give flat (N, side*side) rows, like the MLP nets.
void build_dcgan(const GanConfig& c, xgrad::Rng& rng, xgrad::Sequential& g, xgrad::Sequential& d) {
    const std::size_t q = image_side(c) / 4, wide = 2 * c.channels;
    const auto spatial = static_cast<long>(q), channels = static_cast<long>(wide);
    const xgrad::ConvTranspose2dOptions up{2, 1};

    g.add<xgrad::Linear>(c.noise_dim(), wide * q * q, rng, c.init);
    g.add<xgrad::Reshape>(xgrad::ShapeSpec{-1, channels, spatial, spatial});
    g.add<xgrad::BatchNorm2d>(wide);
    g.add<xgrad::ReLU>();
    g.add<xgrad::ConvTranspose2d>(wide, c.channels, 4, rng, up, c.init);
    g.add<xgrad::BatchNorm2d>(c.channels);
    g.add<xgrad::ReLU>();
    g.add<xgrad::ConvTranspose2d>(c.channels, 1, 4, rng, up, c.init);
    if (c.sigmoid_output) g.add<xgrad::Sigmoid>();
    g.add<xgrad::Flatten>();

    if (c.classes > 0) {
        d.add<ProjectionDiscriminator>(c, rng);
        return;
    }
    const auto convolutions = add_dcgan_features(c, rng, d);
    auto& head = d.add<xgrad::Linear>(dcgan_features(c), 1, rng, c.init);
    apply_spectral_norm(c, rng, {convolutions[0], convolutions[1], &head});
}

void build(const GanConfig& c, xgrad::Rng& rng, xgrad::Sequential& g, xgrad::Sequential& d) {
    if (c.architecture == Architecture::mlp) {
        build_mlp(c, rng, g, d);
    } else {
        build_dcgan(c, rng, g, d);
    }
}

}  // namespace

Gan::Gan(const GanConfig& config, std::uint64_t seed)
    : config_(config),
      rng_(seed),
      augment_(config.augment, seed ^ kAugmentSeed),
      side_(augmented_side(config)),
      parallel_(config.batch) {
    const GanConfig& c = config_;
    if (c.classes > 0 && (c.architecture != Architecture::dcgan || c.objective == Objective::wasserstein)) {
        throw std::invalid_argument("a conditional GAN (classes > 0) has the dcgan nets, and no Wasserstein critic");
    }
    build(c, rng_, generator_, discriminator_);
    g_norms_ = xgrad::batch_norms(generator_);
    d_norms_ = xgrad::batch_norms(discriminator_);
    d_parameters_ = discriminator_.parameters();
    if (c.classes > 0) projection_ = &dynamic_cast<ProjectionDiscriminator&>(discriminator_[0]);
    g_optimizer_ = make_optimizer(c, generator_.parameters());
    d_optimizer_ = make_optimizer(c, d_parameters_);
    if (c.ema_decay > 0.f) {
        // Its own initial weights are overwritten before any use: drawn from
        // a stream of its own, they leave the training stream as it is.
        xgrad::Rng unused(seed + 1);
        xgrad::Sequential discarded;
        build(c, unused, averaged_generator_, discarded);
        averaged_norms_ = xgrad::batch_norms(averaged_generator_);
        ema_ = std::make_unique<xgrad::EmaWeights>(generator_, c.ema_decay);
    }
    real_ = Var(Tensor({c.batch, c.data_dim}, 0.f));
    noise_ = Var(Tensor({c.batch, c.noise_dim()}, 0.f));
    if (c.classes > 0) real_classes_ = Var(Tensor({c.batch, c.classes}, 0.f));
    mix_ = Var(Tensor({c.batch, std::size_t(1)}, 0.f));
    interpolated_ = Var(Tensor({c.batch, c.data_dim}, 0.f));
    if (c.r1_gamma > 0.f && c.r1_every < 1) {
        throw std::invalid_argument("r1_every is " + std::to_string(c.r1_every) + ", expected at least 1");
    }
}

void set_class(Tensor& noise, std::size_t row, std::size_t classes, std::size_t label) {
    const std::size_t width = noise.shape()[1];
    if (label >= classes || classes > width) {
        throw std::invalid_argument("class " + std::to_string(label) + " of " + std::to_string(classes) + " in rows of " +
                                    std::to_string(width) + " values");
    }
    float* one_hot = noise.data() + row * width + (width - classes);
    std::fill(one_hot, one_hot + classes, 0.f);
    one_hot[label] = 1.f;
}

std::size_t class_of(const Tensor& noise, std::size_t row, std::size_t classes) {
    const std::size_t width = noise.shape()[1];
    const float* one_hot = noise.data() + row * width + (width - classes);
    return static_cast<std::size_t>(std::max_element(one_hot, one_hot + classes) - one_hot);
}

void draw_noise(xgrad::Rng& rng, Tensor& noise, float truncation) {
    rng.fill_uniform(noise, -1.f, 1.f);
    // A product after the draw, not U[-psi, psi]: psi = 1 keeps the untruncated values bit for bit.
    if (truncation != 1.f) noise *= truncation;
}

void Gan::sample_noise(Tensor& noise) { sample_noise(noise, rng_); }

void Gan::sample_noise(Tensor& noise, xgrad::Rng& rng) const {
    draw_noise(rng, noise);
    for (std::size_t i = 0; config_.classes > 0 && i < noise.shape()[0]; ++i)
        set_class(noise, i, config_.classes, rng.below(config_.classes));
}

Var Gan::discriminate(const Var& x, const Var& labelled) {
    if (!projection_) return discriminator_(x);
    const std::size_t width = labelled.shape()[1];
    // Straight to the projection, not through a concatenated input: R1's
    // gradient by x then passes no concat or narrow.
    return projection_->judge(x, xgrad::narrow(labelled, 1, width - config_.classes, config_.classes));
}

// Distributed, every rank draws the whole global batch (the random streams
// stay those of one process) and computes its own rows.
const Var& Gan::real_batch(DataSource& data) {
    if (config_.classes == 0) {
        data.sample(real_.mutable_value(), rng_);
    } else {
        data.sample_labelled(real_.mutable_value(), real_classes_.mutable_value(), rng_);
    }
    return parallel_.local_rows(real_);
}

const Var& Gan::noise_batch() {
    sample_noise(noise_.mutable_value());
    return parallel_.local_rows(noise_);
}

xgrad::Sequential& Gan::sampling_generator(bool averaged) {
    if (!averaged || !ema_) return generator_;
    xgrad::NoGrad no_grad;
    refresh_averaged_generator();
    return averaged_generator_;
}

Var Gan::generate(const Var& noise, bool averaged) {
    xgrad::NoGrad no_grad;
    xgrad::Sequential& net = sampling_generator(averaged);
    if (config_.sample_with_batch_stats) {
        const xgrad::StatisticsFrozen frozen(averaged && ema_ ? averaged_norms_ : g_norms_);
        return net(noise);
    }
    const xgrad::EvaluationMode evaluation(net);
    return net(noise);
}

void Gan::refresh_averaged_generator() {
    if (averaged_at_ == steps_done_) return;
    ema_->copy_to(averaged_generator_);
    if (!averaged_norms_.empty()) {
        xgrad::Rng rng(std::uint64_t(steps_done_) * 0x9e3779b97f4a7c15ULL + 17);
        Var noise(Tensor({config_.batch, config_.noise_dim()}, 0.f));
        constexpr int kBatches = 16;
        for (int k = 1; k <= kBatches; ++k) {
            // Momentum 1/k: after batch k the running statistics are the mean of batches 1..k.
            for (xgrad::BatchNorm* bn : averaged_norms_) bn->set_momentum(1.f / float(k));
            sample_noise(noise.mutable_value(), rng);
            averaged_generator_(noise);
        }
        for (std::size_t i = 0; i < averaged_norms_.size(); ++i) averaged_norms_[i]->set_momentum(g_norms_[i]->momentum());
    }
    averaged_at_ = steps_done_;
}

Var Gan::augmented(const Var& x) {
    if (!config_.augment.any()) return x;
    const auto side = static_cast<long>(side_);
    const xgrad::ShapeSpec images{-1, 1, side, side}, rows{-1, static_cast<long>(config_.data_dim)};
    if (parallel_.ranks() == 1) return xgrad::reshape(augment_(xgrad::reshape(x, images)), rows);
    // The global batch with this rank's rows in their place: DiffAugment
    // draws per image in batch order, so each row gets one process's draw,
    // and every rank's stream stays the same (a checkpoint holds rank 0's).
    // The transforms act on each image alone: the zeros change nothing here.
    augment_pieces_.clear();  // its capacity stays: no allocation
    if (rows_before_.defined()) augment_pieces_.push_back(rows_before_);
    augment_pieces_.push_back(x);
    if (rows_after_.defined()) augment_pieces_.push_back(rows_after_);
    const Var global = xgrad::reshape(augment_(xgrad::reshape(xgrad::concat(augment_pieces_), images)), rows);
    return xgrad::narrow(global, 0, rows_before_.defined() ? rows_before_.shape()[0] : 0, x.shape()[0]);
}

Var Gan::discriminator_loss(const Var& real, const Var& fake, float* mean_d_real, const Var& real_classes,
                            const Var& fake_noise) {
    const Var real_seen = augmented(real);  // drawn first, then the fake batch's
    const Var fake_seen = augmented(fake);
    return judged(real_seen, real_classes, fake_seen, fake_noise, mean_d_real);
}

Var Gan::judged(const Var& real_seen, const Var& real_classes, const Var& fake_seen, const Var& fake_noise, float* mean_d_real) {
    // In a fixed order, generated then real, which D's batch-norm running
    // statistics see: as arguments of one call the two would be unsequenced,
    // and compilers order them differently.
    const Var fake_logits = discriminate(fake_seen, fake_noise);
    const Var real_logits = discriminate(real_seen, real_classes);
    if (mean_d_real) *mean_d_real = mean_output(real_logits);
    return real_objective(real_logits) + fake_objective(fake_logits);
}

Var Gan::real_objective(const Var& real_logits) const {
    if (config_.objective == Objective::wasserstein) return -xgrad::mean(real_logits);
    if (config_.objective == Objective::hinge) return xgrad::mean(xgrad::relu(1.f - real_logits));
    return xgrad::bce_with_logits(real_logits, config_.real_label);
}

Var Gan::fake_objective(const Var& fake_logits) const {
    if (config_.objective == Objective::wasserstein) return xgrad::mean(fake_logits);
    if (config_.objective == Objective::hinge) return xgrad::mean(xgrad::relu(fake_logits + 1.f));
    return xgrad::bce_with_logits(fake_logits, 0.f);
}

float Gan::mean_output(const Var& logits) const {
    // Only the standard game's D outputs logits of a probability; the others' are scores.
    return config_.objective == Objective::standard ? mean_probability(logits.value()) : mean_value(logits.value());
}

Var Gan::generator_objective(const Var& fake_logits) const {
    if (config_.objective != Objective::standard) return -xgrad::mean(fake_logits);  // hinge and wasserstein
    if (config_.g_loss == GeneratorLoss::non_saturating) return xgrad::bce_with_logits(fake_logits, 1.f);  // -mean log D(G(z))
    return -xgrad::bce_with_logits(fake_logits, 0.f);  // mean log(1 - D(G(z)))
}

Var Gan::r1_penalty(const Var& real, const Var& real_logits) const {
    xgrad::GradOptions recorded;
    recorded.create_graph = true;
    // d sum_i D(x_i) / d x holds each sample's own gradient in its row.
    const Var g = xgrad::grad(xgrad::sum(real_logits), real, recorded);
    return xgrad::sum(g * g) * (config_.r1_gamma / 2.f / static_cast<float>(real.shape()[0]));
}

Var Gan::gradient_penalty(const Var& real, const Var& fake, xgrad::Rng& rng) {
    // One e per sample of the global batch (every rank draws them all, so
    // the streams stay those of one process), this rank's rows taken.
    rng.fill_uniform(mix_.mutable_value(), 0.f, 1.f);
    const Tensor& e = parallel_.local_rows(mix_).value();
    const std::size_t rows = real.shape()[0], width = real.numel() / std::max<std::size_t>(rows, 1);
    Tensor& between = interpolated_.mutable_value();
    const float *r = real.value().data(), *f = fake.value().data();
    for (std::size_t i = 0; i < rows; ++i) {
        for (std::size_t j = 0; j < width; ++j)
            between.data()[i * width + j] = e(i, 0) * r[i * width + j] + (1.f - e(i, 0)) * f[i * width + j];
    }
    const DifferentiatedInput differentiated(interpolated_);
    xgrad::GradOptions recorded;
    recorded.create_graph = true;
    const Var g = xgrad::grad(xgrad::sum(discriminator_(interpolated_)), interpolated_, recorded);
    const Var distance = xgrad::sqrt(xgrad::sum(g * g, {1}) + 1e-12f) - 1.f;  // +1e-12: sqrt' is finite at 0
    return xgrad::mean(distance * distance) * config_.gp_lambda;
}

bool Gan::applies_r1(long update) const { return config_.r1_gamma > 0.f && update % config_.r1_every == 0; }

Var Gan::generator_loss(const Var& noise) { return generator_objective(discriminate(augmented(generator_(noise)), noise)); }

StepStats Gan::step(DataSource& data, bool stop_request) {
    StepStats stats;
    stats.stop = stop_request;
    for (std::size_t i = 0; i < config_.k; ++i) discriminator_step(data, stats);
    generator_step(stats);
    ++steps_done_;
    return stats;
}

void Gan::distribute(const xgrad::Distributed& distributed, xgrad::ReduceOrder order) {
    if (distributed.size() == 1) return;
    parallel_ = xgrad::DataParallel(config_.batch, distributed, order);
    parallel_.broadcast(generator_);
    parallel_.broadcast(discriminator_);
    if (ema_) ema_ = std::make_unique<xgrad::EmaWeights>(generator_, config_.ema_decay);  // from the broadcast weights
    d_gradients_ = parallel_.gradients(d_parameters_);
    g_gradients_ = parallel_.gradients(generator_.parameters(), kStatistics);
    std::vector<Var> running_statistics;
    for (const auto* norms : {&g_norms_, &d_norms_}) {
        for (const xgrad::BatchNorm* bn : *norms) {
            for (const Var& v : bn->buffers()) running_statistics.push_back(v);
        }
    }
    parallel_.share_buffers(std::move(running_statistics));
    interpolated_ = Var(Tensor({parallel_.local_batch(), config_.data_dim}, 0.f));
    if (config_.augment.any()) {
        const xgrad::DistributedSampler rows(config_.batch, distributed);
        if (rows.begin() > 0) rows_before_ = Var(Tensor({rows.begin(), config_.data_dim}, 0.f));
        if (rows.end() < config_.batch) rows_after_ = Var(Tensor({config_.batch - rows.end(), config_.data_dim}, 0.f));
        augment_pieces_.reserve(3);
    }
}

double Gan::allreduce_seconds() const { return d_gradients_.seconds() + g_gradients_.seconds(); }

double Gan::allreduce_mpi_seconds() const { return d_gradients_.mpi_seconds() + g_gradients_.mpi_seconds(); }

void Gan::average_statistics() {
    // Only step() changes them: once per step is enough (steps_done_ is the same on every rank).
    if (statistics_averaged_at_ == steps_done_) return;
    parallel_.average_buffers();
    statistics_averaged_at_ = steps_done_;
}

std::vector<Var> Gan::parameters() const {
    std::vector<Var> all = generator_.parameters();
    all.insert(all.end(), d_parameters_.begin(), d_parameters_.end());
    return all;
}

// (1) D's update: it ascends log D(x) + log(1 - D(G(z))) on m real and m
// generated samples.
void Gan::discriminator_step(DataSource& data, StepStats& stats) {
    if (data.dim() != config_.data_dim) {
        throw std::invalid_argument("the data has " + std::to_string(data.dim()) + " values per sample, the GAN expects " +
                                    std::to_string(config_.data_dim));
    }
    Var real = real_batch(data);
    const Var& noise = noise_batch();
    const Var& real_classes = config_.classes > 0 ? parallel_.local_rows(real_classes_) : real_classes_;
    // G's samples are made without a graph, so nothing of G is recorded,
    // differentiated or changed (G runs with batch statistics, as in its own
    // update, but leaves its running ones).
    Var fake;
    {
        xgrad::NoGrad no_grad;
        const xgrad::StatisticsFrozen g_statistics(g_norms_);
        fake = generator_(noise);
    }
    d_optimizer_->zero_grad();
    stats.d_loss = differentiate_discriminator_loss(real, real_classes, fake, noise, stats);
    ++d_updates_;
    d_gradients_.average();  // the ranks' mean gradient
    d_optimizer_->step();
}

float Gan::differentiate_discriminator_loss(Var& real, const Var& real_classes, const Var& fake, const Var& fake_noise,
                                            StepStats& stats) {
    const bool r1 = applies_r1(d_updates_);
    std::optional<DifferentiatedInput> differentiated;
    if (r1) differentiated.emplace(real);
    // What D sees (the batches themselves without augmentation), drawn in
    // discriminator_loss's order. R1 is taken at the un-augmented leaf
    // `real`, its gradient flowing back through the augmentation (the
    // default of DiffAugment's StyleGAN2 code, ns_DiffAugment_r1).
    const Var real_seen = augmented(real);
    const Var fake_seen = augmented(fake);
    if (r1) {
        // Lazy R1 shares D's forward pass on the real batch with the loss.
        // That half of the loss and the penalty are differentiated before
        // D sees the generated batch, so that the penalty's graph, the
        // step's largest, is never held together with a second one of D's
        // (docs/design.md, "Two rules per op").
        const Var real_logits = discriminate(real_seen, real_classes);
        stats.d_real = mean_output(real_logits);
        const Var penalty = r1_penalty(real, real_logits);
        stats.penalty = penalty.item();
        const Var real_loss = real_objective(real_logits) + penalty * static_cast<float>(config_.r1_every);
        xgrad::backward(real_loss);
        const Var fake_loss = fake_objective(discriminate(fake_seen, fake_noise));
        xgrad::backward(fake_loss);
        return real_loss.item() + fake_loss.item();
    }
    Var loss = judged(real_seen, real_classes, fake_seen, fake_noise, &stats.d_real);
    if (config_.objective == Objective::wasserstein && config_.gp_lambda > 0.f) {
        // Between the augmented batches, the points D is trained on (as the
        // DiffAugment authors' compare_gan code penalises D).
        const Var penalty = gradient_penalty(real_seen, fake_seen, rng_);
        stats.penalty = penalty.item() / config_.gp_lambda;
        loss = loss + penalty;
    }
    xgrad::backward(loss);
    return loss.item();
}

// (2) G's update, on fresh noise: gradients reach G through D by backward()
// alone (see GeneratorLoss for what it ascends).
void Gan::generator_step(StepStats& stats) {
    const Var& noise = noise_batch();
    // D is frozen while G learns through it: its parameters get no gradient
    // (backward skips that work) and stay put, and its running statistics too.
    const xgrad::FreezeGuard frozen(d_parameters_);
    const xgrad::StatisticsFrozen d_statistics(d_norms_);
    const Var logits = discriminate(augmented(generator_(noise)), noise);
    const Var loss = generator_objective(logits);
    g_optimizer_->zero_grad();
    xgrad::backward(loss);
    stats.g_loss = loss.item();
    stats.d_fake = mean_output(logits);
    average_generator_gradients(stats);  // the ranks' mean gradient, and the step's statistics
    g_optimizer_->step();
    if (ema_) ema_->update();
}

void Gan::average_generator_gradients(StepStats& stats) {
    // Means over equal slices are the global batch's means; a non-finite
    // loss on one rank makes every rank's non-finite, so all stop alike.
    float means[kStatistics] = {stats.d_loss, stats.g_loss, stats.d_real, stats.d_fake};
    stats.stop = g_gradients_.average(stats.stop, means, kStatistics);
    stats.d_loss = means[0];
    stats.g_loss = means[1];
    stats.d_real = means[2];
    stats.d_fake = means[3];
}

double Gan::value_estimate(DataSource& data, std::size_t batches, xgrad::Rng& rng) {
    xgrad::NoGrad no_grad;
    const xgrad::StatisticsFrozen d_statistics(d_norms_);
    Var real(Tensor({config_.batch, config_.data_dim}, 0.f));
    Var classes(Tensor({config_.batch, std::max<std::size_t>(config_.classes, 1)}, 0.f));
    Var noise(Tensor({config_.batch, config_.noise_dim()}, 0.f));
    double total = 0;
    for (std::size_t b = 0; b < batches; ++b) {
        if (config_.classes == 0) {
            data.sample(real.mutable_value(), rng);
        } else {
            data.sample_labelled(real.mutable_value(), classes.mutable_value(), rng);
        }
        sample_noise(noise.mutable_value(), rng);
        // log D(x) = -BCE(logit, 1) and log(1 - D(G(z))) = -BCE(logit, 0), computed stably.
        total -= xgrad::bce_with_logits(discriminate(real, classes), 1.f).item();
        total -= xgrad::bce_with_logits(discriminate(generate(noise), noise), 0.f).item();
    }
    return total / double(batches);
}

void Gan::save(xgrad::Archive& archive) const {
    generator_.save(archive, "generator.");
    discriminator_.save(archive, "discriminator.");
    g_optimizer_->save(archive, "g_optimizer.");
    d_optimizer_->save(archive, "d_optimizer.");
    if (ema_) ema_->save(archive, "generator_average.");
    archive.put_text("preset", config_.preset);
    archive.put_text("architecture", config_.architecture_text());
    archive.put_integer("steps", steps_done_);
    archive.put_text("rng", rng_.state());
    if (config_.augment.any()) archive.put_text("augment_rng", augment_.rng().state());
}

void Gan::load(const xgrad::Archive& archive) {
    if (archive.contains("preset") && archive.text("preset") != config_.preset) {
        throw std::runtime_error("the checkpoint was trained with preset '" + archive.text("preset") +
                                 "', this run uses preset '" + config_.preset + "' (resume with --preset " +
                                 archive.text("preset") + ")");
    }
    if (archive.text("architecture") != config_.architecture_text()) {
        throw std::runtime_error("the checkpoint holds a GAN of another shape (" + archive.text("architecture") +
                                 ") than this run (" + config_.architecture_text() + ")");
    }
    // The texts first: a malformed one then fails before anything changed.
    const std::string& steps_text = archive.text("steps");
    const std::optional<std::uint64_t> steps = common::parse_unsigned(steps_text);
    if (!steps || *steps > static_cast<std::uint64_t>(std::numeric_limits<long>::max())) {
        throw std::runtime_error("the text 'steps' is '" + steps_text + "', expected a step count (a non-negative integer)");
    }
    xgrad::Rng rng = rng_;
    try {
        rng.set_state(archive.text("rng"));
    } catch (const std::invalid_argument&) {
        throw std::runtime_error("the text 'rng' is not a saved random state");
    }
    xgrad::Rng augment_rng = augment_.rng();
    if (config_.augment.any()) {
        const auto saved = archive.texts().find("augment_rng");
        if (saved == archive.texts().end()) {
            throw std::runtime_error(
                "the checkpoint holds no augmentation state (it was trained without --augment), this run "
                "augments (--augment " +
                xgrad::augment_policy_text(config_.augment) + ")");
        }
        try {
            augment_rng.set_state(saved->second);
        } catch (const std::invalid_argument&) {
            throw std::runtime_error("the text 'augment_rng' is not a saved random state");
        }
    }
    generator_.load(archive, "generator.");
    discriminator_.load(archive, "discriminator.");
    g_optimizer_->load(archive, "g_optimizer.");
    d_optimizer_->load(archive, "d_optimizer.");
    if (ema_) ema_->load(archive, "generator_average.");
    steps_done_ = static_cast<long>(*steps);
    d_updates_ = steps_done_ * static_cast<long>(config_.k);
    rng_ = rng;
    augment_.rng() = augment_rng;
    averaged_at_ = -1;
    statistics_averaged_at_ = -1;
}

}  // namespace gan
