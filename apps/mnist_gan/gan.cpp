#include "gan.hpp"

#include <cmath>
#include <limits>
#include <optional>
#include <sstream>
#include <stdexcept>

#include <xgrad/ops.hpp>

#include "numbers.hpp"

namespace gan {

using xgrad::Tensor;
using xgrad::Var;

std::string GanConfig::architecture() const {
    std::ostringstream s;
    s << "data_dim=" << data_dim << " z_dim=" << z_dim << " hidden=" << hidden
      << " d_activation=" << (d_leaky_slope > 0.f ? "leaky_relu" : "relu")
      << " g_output=" << (sigmoid_output ? "sigmoid" : "linear")
      << " optimizer=" << (optimizer == OptimizerKind::adam ? "adam" : "sgd");
    return s.str();
}

GanConfig reference_preset() { return GanConfig{}; }

GanConfig default_preset() {
    GanConfig c;
    c.hidden = 256;
    c.lr = 2e-4f;
    c.beta1 = 0.5f;
    c.d_leaky_slope = 0.2f;
    c.real_label = 0.9f;
    return c;
}

GanConfig preset(const std::string& name) {
    if (name == "reference") return reference_preset();
    if (name == "default") return default_preset();
    throw std::invalid_argument("unknown preset '" + name + "' (expected 'reference' or 'default')");
}

namespace {

std::unique_ptr<xgrad::Optimizer> make_optimizer(const GanConfig& c, std::vector<Var> parameters) {
    if (c.optimizer == OptimizerKind::sgd) return std::make_unique<xgrad::SGD>(std::move(parameters), c.lr);
    return std::make_unique<xgrad::Adam>(std::move(parameters), xgrad::AdamOptions{c.lr, c.beta1, c.beta2, 1e-8f});
}

float mean_probability(const Tensor& logits) {
    double total = 0;
    for (float x : logits) total += 1.0 / (1.0 + std::exp(-double(x)));
    return static_cast<float>(total / double(logits.size()));
}

}  // namespace

Gan::Gan(const GanConfig& config, std::uint64_t seed) : config_(config), rng_(seed) {
    const GanConfig& c = config_;
    generator_.add<xgrad::Linear>(c.z_dim, c.hidden, rng_, c.init);
    generator_.add<xgrad::ReLU>();
    generator_.add<xgrad::Linear>(c.hidden, c.data_dim, rng_, c.init);
    if (c.sigmoid_output) generator_.add<xgrad::Sigmoid>();

    discriminator_.add<xgrad::Linear>(c.data_dim, c.hidden, rng_, c.init);
    if (c.d_leaky_slope > 0.f) {
        discriminator_.add<xgrad::LeakyReLU>(c.d_leaky_slope);
    } else {
        discriminator_.add<xgrad::ReLU>();
    }
    discriminator_.add<xgrad::Linear>(c.hidden, 1, rng_, c.init);

    d_parameters_ = discriminator_.parameters();
    g_optimizer_ = make_optimizer(c, generator_.parameters());
    d_optimizer_ = make_optimizer(c, d_parameters_);
    real_ = Var(Tensor({c.batch, c.data_dim}, 0.f));
    noise_ = Var(Tensor({c.batch, c.z_dim}, 0.f));
}

void Gan::sample_noise(Tensor& noise) { rng_.fill_uniform(noise, -1.f, 1.f); }

Var Gan::generate(const Var& noise) {
    xgrad::NoGrad no_grad;
    return generator_(noise);
}

Var Gan::discriminator_loss(const Var& real, const Var& fake, float* mean_d_real) {
    const Var real_logits = discriminator_(real);
    if (mean_d_real) *mean_d_real = mean_probability(real_logits.value());
    return xgrad::bce_with_logits(real_logits, config_.real_label) + xgrad::bce_with_logits(discriminator_(fake), 0.f);
}

Var Gan::generator_objective(const Var& fake_logits) const {
    if (config_.g_loss == GeneratorLoss::non_saturating) return xgrad::bce_with_logits(fake_logits, 1.f);  // -mean log D(G(z))
    return -xgrad::bce_with_logits(fake_logits, 0.f);                                                        // mean log(1 - D(G(z)))
}

Var Gan::generator_loss(const Var& noise) { return generator_objective(discriminator_(generator_(noise))); }

StepStats Gan::step(DataSource& data) {
    StepStats stats;
    for (std::size_t i = 0; i < config_.k; ++i) discriminator_step(data, stats);
    generator_step(stats);
    ++steps_done_;
    return stats;
}

// m real and m generated samples; the fake batch is generated without a
// graph, so nothing of G is recorded, differentiated or changed.
void Gan::discriminator_step(DataSource& data, StepStats& stats) {
    if (data.dim() != config_.data_dim) {
        throw std::invalid_argument("the data has " + std::to_string(data.dim()) + " values per sample, the GAN expects " +
                                    std::to_string(config_.data_dim));
    }
    data.sample(real_.mutable_value(), rng_);
    sample_noise(noise_.mutable_value());
    const Var loss = discriminator_loss(real_, generate(noise_), &stats.d_real);
    d_optimizer_->zero_grad();
    xgrad::backward(loss);
    d_optimizer_->step();
    stats.d_loss = loss.item();
}

// Fresh noise; gradients reach G through the frozen D by backward() alone.
void Gan::generator_step(StepStats& stats) {
    sample_noise(noise_.mutable_value());
    // D is frozen while G learns through it: its parameters then get no
    // gradient (backward skips that work) and stay put.
    const xgrad::FreezeGuard frozen(d_parameters_);
    const Var logits = discriminator_(generator_(noise_));
    const Var loss = generator_objective(logits);
    g_optimizer_->zero_grad();
    xgrad::backward(loss);
    g_optimizer_->step();
    stats.g_loss = loss.item();
    stats.d_fake = mean_probability(logits.value());
}

double Gan::value_estimate(DataSource& data, std::size_t batches, xgrad::Rng& rng) {
    xgrad::NoGrad no_grad;
    Var real(Tensor::from_shape({config_.batch, config_.data_dim}));
    Var noise(Tensor::from_shape({config_.batch, config_.z_dim}));
    double total = 0;
    for (std::size_t b = 0; b < batches; ++b) {
        data.sample(real.mutable_value(), rng);
        rng.fill_uniform(noise.mutable_value(), -1.f, 1.f);
        // log D(x) = -BCE(logit, 1) and log(1 - D(G(z))) = -BCE(logit, 0), computed stably.
        total -= xgrad::bce_with_logits(discriminator_(real), 1.f).item();
        total -= xgrad::bce_with_logits(discriminator_(generator_(noise)), 0.f).item();
    }
    return total / double(batches);
}

void Gan::save(xgrad::Archive& archive) const {
    generator_.save(archive, "generator.");
    discriminator_.save(archive, "discriminator.");
    g_optimizer_->save(archive, "g_optimizer.");
    d_optimizer_->save(archive, "d_optimizer.");
    archive.put_text("architecture", config_.architecture());
    archive.put_text("steps", std::to_string(steps_done_));
    archive.put_text("rng", rng_.state());
}

void Gan::load(const xgrad::Archive& archive) {
    if (archive.text("architecture") != config_.architecture()) {
        throw std::runtime_error("the checkpoint holds a GAN of another shape (" + archive.text("architecture") +
                                 ") than this run (" + config_.architecture() + ")");
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
    generator_.load(archive, "generator.");
    discriminator_.load(archive, "discriminator.");
    g_optimizer_->load(archive, "g_optimizer.");
    d_optimizer_->load(archive, "d_optimizer.");
    steps_done_ = static_cast<long>(*steps);
    rng_ = rng;
}

}  // namespace gan
