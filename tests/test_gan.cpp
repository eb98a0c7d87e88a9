// The GAN of apps/mnist_gan: gradients reach exactly the player being
// updated, each update is the one finite differences predict, a toy GAN
// really learns its target, resuming is bit-exact, and the program runs end
// to end on a tiny IDX file.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include <xgrad/check/gradcheck.hpp>
#include <xgrad/io/archive_file.hpp>
#include <xgrad/io/idx.hpp>
#include <xgrad/io/image.hpp>
#include <xgrad/io/safetensors.hpp>
#include "app_helpers.hpp"
#include "helpers.hpp"
#include "png_file.hpp"

#include "app.hpp"
#include "classifier.hpp"
#include "gan.hpp"
#include "outputs.hpp"
#include "presets.hpp"

using namespace xgrad;
using gan::Gan;
using gan::GanConfig;

namespace {

// Samples of N(mean, stddev^2) in every dimension.
class GaussianData : public gan::DataSource {
public:
    GaussianData(std::size_t dim, float mean, float stddev) : dim_(dim), mean_(mean), stddev_(stddev) {}
    std::size_t dim() const override { return dim_; }
    void sample(Tensor& batch, Rng& rng) override { rng.fill_normal(batch, mean_, stddev_); }

private:
    std::size_t dim_;
    float mean_, stddev_;
};

GanConfig tiny_config(gan::GeneratorLoss loss = gan::GeneratorLoss::non_saturating) {
    GanConfig c;
    c.data_dim = 6;
    c.z_dim = 3;
    c.hidden = 5;
    c.batch = 4;
    c.optimizer = gan::OptimizerKind::sgd;  // the update is then exactly -lr * gradient
    c.lr = 0.05f;
    c.g_loss = loss;
    c.sigmoid_output = false;
    return c;
}

std::vector<Tensor> values(const std::vector<Var>& parameters) {
    std::vector<Tensor> out;
    for (const Var& p : parameters) out.push_back(p.value());
    return out;
}

bool identical(const std::vector<Tensor>& a, const std::vector<Tensor>& b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
        if (a[i].shape() != b[i].shape()) return false;
        if (std::memcmp(a[i].data(), b[i].data(), a[i].size() * sizeof(float)) != 0) return false;
    }
    return true;
}

// after == before - lr * grad, element by element.
void check_sgd_update(const std::vector<Tensor>& before, const std::vector<Var>& gradients_from, const std::vector<Tensor>& after,
                      float lr) {
    REQUIRE(before.size() == after.size());
    for (std::size_t i = 0; i < before.size(); ++i) {
        const Tensor& g = gradients_from[i].grad();
        for (std::size_t j = 0; j < before[i].size(); ++j) {
            CHECK(after[i].data()[j] == doctest::Approx(before[i].data()[j] - lr * g.data()[j]).epsilon(1e-5));
        }
    }
}

GradcheckOptions loss_check_options() {
    GradcheckOptions o;
    o.step = 1e-3;  // ReLU kinks: a small step rarely straddles one in these tiny nets
    // A float32 loss differenced over so small a step is noisy at the
    // default tolerance: the wider one of a whole-network check.
    o.atol = 1e-3;
    o.rtol = 1e-2;
    return o;
}

}  // namespace

TEST_CASE("discriminator step: G untouched, D moves by -lr times the finite-difference gradient") {
    GaussianData data(6, 0.5f, 1.f);
    Gan trained(tiny_config(), 7), reference(tiny_config(), 7);
    const auto g_before = values(trained.generator().parameters());
    const auto d_before = values(trained.discriminator().parameters());
    Rng replay = trained.rng();  // the step's batch, drawn again

    gan::StepStats stats;
    trained.discriminator_step(data, stats);
    CHECK(identical(values(trained.generator().parameters()), g_before));
    CHECK_FALSE(identical(values(trained.discriminator().parameters()), d_before));

    Var real(Tensor::from_shape({4, 6})), noise(Tensor::from_shape({4, 3}));
    data.sample(real.mutable_value(), replay);
    replay.fill_uniform(noise.mutable_value(), -1.f, 1.f);
    const Var fake = reference.generate(noise);
    const auto d_parameters = reference.discriminator().parameters();
    const GradcheckResult check = gradcheck([&](const std::vector<Var>&) { return reference.discriminator_loss(real, fake); },
                                            d_parameters, loss_check_options());
    INFO(check.report());
    CHECK(check.ok);
    CHECK(stats.d_loss == doctest::Approx(reference.discriminator_loss(real, fake).item()));
    check_sgd_update(d_before, d_parameters, values(trained.discriminator().parameters()), 0.05f);
}

TEST_CASE("generator step: D untouched and gets no gradient; G moves by -lr times the gradient through D") {
    for (auto loss : {gan::GeneratorLoss::non_saturating, gan::GeneratorLoss::minimax}) {
        CAPTURE(static_cast<int>(loss));
        Gan trained(tiny_config(loss), 11), reference(tiny_config(loss), 11);
        const auto g_before = values(trained.generator().parameters());
        const auto d_before = values(trained.discriminator().parameters());
        std::vector<Tensor> d_grads_before;
        for (const Var& p : trained.discriminator().parameters()) d_grads_before.push_back(p.grad());
        Rng replay = trained.rng();

        gan::StepStats stats;
        trained.generator_step(stats);
        CHECK(identical(values(trained.discriminator().parameters()), d_before));
        std::vector<Tensor> d_grads_after;
        for (const Var& p : trained.discriminator().parameters()) d_grads_after.push_back(p.grad());
        CHECK(identical(d_grads_after, d_grads_before));
        for (const Var& p : trained.discriminator().parameters()) CHECK(p.requires_grad());  // unfrozen again

        Var noise(Tensor::from_shape({4, 3}));
        replay.fill_uniform(noise.mutable_value(), -1.f, 1.f);
        const auto g_parameters = reference.generator().parameters();
        const GradcheckResult check = gradcheck([&](const std::vector<Var>&) { return reference.generator_loss(noise); },
                                                g_parameters, loss_check_options());
        INFO(check.report());
        CHECK(check.ok);
        CHECK(stats.g_loss == doctest::Approx(reference.generator_loss(noise).item()));
        check_sgd_update(g_before, g_parameters, values(trained.generator().parameters()), 0.05f);
    }
}

TEST_CASE("a step on data of the wrong size is refused with both sizes") {
    GaussianData data(5, 0.f, 1.f);
    Gan g(tiny_config(), 1);  // expects 6 values per sample
    CHECK_THROWS_WITH_AS(g.step(data), doctest::Contains("5 values per sample, the GAN expects 6"), std::invalid_argument);
}

TEST_CASE("the two generator losses: non-saturating is -log D(G(z)), minimax is log(1 - D(G(z)))") {
    Gan a(tiny_config(gan::GeneratorLoss::non_saturating), 3), b(tiny_config(gan::GeneratorLoss::minimax), 3);
    Var noise(Tensor::from_shape({4, 3}));
    Rng rng(5);
    rng.fill_uniform(noise.mutable_value(), -1.f, 1.f);
    NoGrad no_grad;
    const Tensor logits = a.discriminator()(a.generate(noise)).value();
    double non_saturating = 0, minimax = 0;
    for (float x : logits) {
        const double d = 1.0 / (1.0 + std::exp(-double(x)));
        non_saturating -= std::log(d) / 4;
        minimax += std::log(1 - d) / 4;
    }
    CHECK(a.generator_loss(noise).item() == doctest::Approx(non_saturating).epsilon(1e-5));
    CHECK(b.generator_loss(noise).item() == doctest::Approx(minimax).epsilon(1e-5));
}

TEST_CASE("a 1-D GAN learns the mean and spread of a Gaussian") {
    GanConfig c;
    c.data_dim = 1;
    c.z_dim = 4;
    c.hidden = 32;
    c.batch = 128;
    c.lr = 2e-3f;
    c.beta1 = 0.5f;
    c.d_leaky_slope = 0.2f;
    c.sigmoid_output = false;
    c.init = Init::xavier_uniform;
    const float target_mean = 3.f, target_stddev = 0.5f;
    GaussianData data(1, target_mean, target_stddev);
    Gan g(c, 2024);
    for (int step = 0; step < 3000; ++step) g.step(data);

    Var noise(Tensor::from_shape({4096, 4}));
    Rng rng(99);
    rng.fill_uniform(noise.mutable_value(), -1.f, 1.f);
    const Tensor samples = g.generate(noise).value();
    double sum = 0, sum_sq = 0;
    for (float x : samples) {
        sum += x;
        sum_sq += double(x) * x;
    }
    const double mean = sum / 4096, stddev = std::sqrt(sum_sq / 4096 - mean * mean);
    INFO("mean " << mean << ", stddev " << stddev);
    CHECK(mean == doctest::Approx(target_mean).epsilon(0.05));
    CHECK(stddev == doctest::Approx(target_stddev).epsilon(0.3));
}

TEST_CASE("resuming from a saved GAN is bit-exact") {
    GaussianData data(6, 0.f, 1.f);
    GanConfig c = tiny_config();
    c.optimizer = gan::OptimizerKind::adam;
    Gan straight(c, 5), first_half(c, 5);
    for (int i = 0; i < 6; ++i) straight.step(data);
    for (int i = 0; i < 3; ++i) first_half.step(data);

    const std::string path = (std::filesystem::temp_directory_path() / "xgrad_test_gan_resume.xgrad").string();
    Archive archive;
    first_half.save(archive);
    xgrad::write_archive(path, archive);
    Gan resumed(c, 999);  // another seed: everything must come from the file
    resumed.load(read_archive(path));
    std::filesystem::remove(path);
    CHECK(resumed.steps_done() == 3);
    for (int i = 0; i < 3; ++i) resumed.step(data);
    CHECK(identical(values(resumed.generator().parameters()), values(straight.generator().parameters())));
    CHECK(identical(values(resumed.discriminator().parameters()), values(straight.discriminator().parameters())));

    GanConfig other = c;
    other.hidden = 7;
    Gan mismatched(other, 5);
    CHECK_THROWS_WITH_AS(mismatched.load(archive), doctest::Contains("another shape"), std::runtime_error);
}

namespace {

// The dcgan preset shrunk: 8 x 8 images, 4 channels.
GanConfig tiny_dcgan() {
    GanConfig c = gan::dcgan_preset();
    c.data_dim = 64;
    c.z_dim = 5;
    c.channels = 4;
    c.batch = 4;
    return c;
}

std::vector<Tensor> buffer_values(xgrad::Module& m) { return values(m.buffers()); }

}  // namespace

TEST_CASE("dcgan: the D step changes only D (parameters and running statistics), the G step only G") {
    GaussianData data(64, 0.5f, 0.2f);
    Gan g(tiny_dcgan(), 3);
    REQUIRE(g.generator().buffers().size() == 4);  // two batch norms in G
    REQUIRE(g.discriminator().buffers().size() == 2);
    g.step(data);  // past the first step: every buffer has moved once

    const auto g_params = values(g.generator().parameters()), g_buffers = buffer_values(g.generator());
    const auto d_params = values(g.discriminator().parameters()), d_buffers = buffer_values(g.discriminator());
    gan::StepStats stats;
    g.discriminator_step(data, stats);
    CHECK(identical(values(g.generator().parameters()), g_params));
    CHECK(identical(buffer_values(g.generator()), g_buffers));  // G ran with batch statistics, its running ones untouched
    CHECK_FALSE(identical(values(g.discriminator().parameters()), d_params));
    CHECK_FALSE(identical(buffer_values(g.discriminator()), d_buffers));

    const auto d_params_after = values(g.discriminator().parameters()), d_buffers_after = buffer_values(g.discriminator());
    g.generator_step(stats);
    CHECK(identical(values(g.discriminator().parameters()), d_params_after));
    CHECK(identical(buffer_values(g.discriminator()), d_buffers_after));
    CHECK_FALSE(identical(values(g.generator().parameters()), g_params));
    CHECK_FALSE(identical(buffer_values(g.generator()), g_buffers));
}

// ---- gradient penalties: gradients of gradients by the generic backward ------------

namespace {

// d penalty / d p for D's parameters by backward() through the penalty's
// recorded gradient, against central differences of the penalty in double.
template <class Penalty>
void check_penalty_gradient(Gan& g, const Penalty& penalty) {
    const std::vector<Var> d_parameters = g.discriminator().parameters();
    for (Var p : d_parameters) p.zero_grad();
    backward(penalty());
    double worst = 0, scale = 0;
    for (Var p : d_parameters) {
        for (std::size_t e = 0; e < p.numel(); ++e) {
            const float x0 = p.value().data()[e], h = 1e-2f;
            p.mutable_value().data()[e] = x0 + h;
            const double up = penalty().item();
            p.mutable_value().data()[e] = x0 - h;
            const double down = penalty().item();
            p.mutable_value().data()[e] = x0;
            const double numeric = (up - down) / (double(x0 + h) - double(x0 - h));
            worst = std::max(worst, std::abs(numeric - p.grad().data()[e]));
            scale = std::max(scale, std::abs(numeric));
        }
    }
    INFO("worst difference " << worst << " against a largest derivative of " << scale);
    CHECK(scale > 1e-3);  // the penalty does depend on D's weights
    CHECK(worst <= 2e-3 * std::max(1.0, scale));
}

GanConfig with_r1(GanConfig c, float gamma, long every) {
    c.r1_gamma = gamma;
    c.r1_every = every;
    return c;
}

}  // namespace

TEST_CASE("R1's gradient by D's parameters matches finite differences of the penalty") {
    GanConfig c = with_r1(tiny_config(), 2.f, 1);
    c.d_leaky_slope = 0.2f;  // smooth enough between kinks for a 1e-2 step
    Gan g(c, 21);
    GaussianData data(6, 0.5f, 1.f);
    Rng rng(4);
    Var real(Tensor::from_shape({4, 6}), true);
    data.sample(real.mutable_value(), rng);
    check_penalty_gradient(g, [&] { return g.r1_penalty(real, g.discriminator()(real)); });
    // gamma/2 mean ||grad||^2 itself, against differences of D's output by x.
    const double analytic = g.r1_penalty(real, g.discriminator()(real)).item();
    double squares = 0;
    for (std::size_t e = 0; e < real.numel(); ++e) {
        const float x0 = real.value().data()[e], h = 1e-2f;
        real.mutable_value().data()[e] = x0 + h;
        const double up = sum(g.discriminator()(real)).item();
        real.mutable_value().data()[e] = x0 - h;
        const double down = sum(g.discriminator()(real)).item();
        real.mutable_value().data()[e] = x0;
        const double d = (up - down) / (double(x0 + h) - double(x0 - h));
        squares += d * d;
    }
    CHECK(analytic == doctest::Approx(1.0 * squares / 4).epsilon(1e-2));
}

TEST_CASE("WGAN-GP's penalty gradient by D's parameters matches finite differences") {
    GanConfig c = tiny_config();
    c.objective = gan::Objective::wasserstein;
    c.gp_lambda = 10.f;
    c.d_leaky_slope = 0.2f;
    Gan g(c, 22);
    GaussianData data(6, 0.5f, 1.f);
    Rng rng(5);
    Var real(Tensor::from_shape({4, 6})), fake(Tensor::from_shape({4, 6}));
    data.sample(real.mutable_value(), rng);
    rng.fill_normal(fake.mutable_value(), 0.f, 1.f);
    // The same interpolation points every time: each evaluation draws from a copy of one stream.
    check_penalty_gradient(g, [&] {
        Rng same(9);
        return g.gradient_penalty(real, fake, same);
    });
}

TEST_CASE("a D update with R1 changes only D, and differs from one without") {
    GaussianData data(64, 0.5f, 0.2f);
    Gan plain(tiny_dcgan(), 3), penalised(with_r1(tiny_dcgan(), 10.f, 1), 3);
    const auto g_params = values(penalised.generator().parameters()), g_buffers = buffer_values(penalised.generator());
    gan::StepStats plain_stats, stats;
    plain.discriminator_step(data, plain_stats);
    penalised.discriminator_step(data, stats);
    CHECK(stats.penalty > 0.f);
    CHECK(identical(values(penalised.generator().parameters()), g_params));
    CHECK(identical(buffer_values(penalised.generator()), g_buffers));
    CHECK_FALSE(identical(values(penalised.discriminator().parameters()), values(plain.discriminator().parameters())));
    CHECK(stats.d_real == plain_stats.d_real);  // the same batch through the same D: only the penalty differs
}

TEST_CASE("R1 is applied lazily at every r1_every-th D update, and resuming stays bit-exact") {
    GaussianData data(64, 0.5f, 0.2f);
    const GanConfig c = with_r1(tiny_dcgan(), 1.f, 2);
    Gan straight(c, 6), first_half(c, 6);
    std::vector<float> penalties;
    for (int i = 0; i < 6; ++i) penalties.push_back(straight.step(data).penalty);
    CHECK(penalties[0] > 0.f);  // updates 0, 2, 4 apply it
    CHECK(penalties[1] == 0.f);
    CHECK(penalties[2] > 0.f);
    for (int i = 0; i < 3; ++i) first_half.step(data);
    Archive archive;
    first_half.save(archive);
    Gan resumed(c, 999);
    resumed.load(archive);
    for (int i = 0; i < 3; ++i) resumed.step(data);
    CHECK(identical(values(resumed.generator().parameters()), values(straight.generator().parameters())));
    CHECK(identical(values(resumed.discriminator().parameters()), values(straight.discriminator().parameters())));
    CHECK(identical(buffer_values(resumed.discriminator()), buffer_values(straight.discriminator())));
}

TEST_CASE("dcgan with its averaged generator resumes bit-exactly, and the averaged samples are the averaged weights'") {
    GaussianData data(64, 0.5f, 0.2f);
    const GanConfig c = tiny_dcgan();
    Gan straight(c, 8), first_half(c, 8);
    REQUIRE(straight.has_averaged_generator());
    for (int i = 0; i < 6; ++i) straight.step(data);
    for (int i = 0; i < 3; ++i) first_half.step(data);
    Archive archive;
    first_half.save(archive);
    CHECK(archive.contains("generator_average.0.weight"));
    Gan resumed(c, 999);
    resumed.load(archive);
    for (int i = 0; i < 3; ++i) resumed.step(data);
    CHECK(identical(values(resumed.generator().parameters()), values(straight.generator().parameters())));
    CHECK(identical(buffer_values(resumed.discriminator()), buffer_values(straight.discriminator())));
    Var noise(Tensor({4, 5}, 0.3f));
    const Tensor a = straight.generate(noise, true).value(), b = resumed.generate(noise, true).value();
    CHECK(a == b);
    // The averaged generator differs from the raw one after training.
    CHECK_FALSE(a == straight.generate(noise, false).value());

    GanConfig mlp = gan::mlp_preset();
    Gan other(mlp, 1);
    CHECK_THROWS_WITH_AS(other.load(archive), doctest::Contains("preset 'dcgan'"), std::runtime_error);
}

// ---- augmentation (DiffAugment) and the hinge loss ----------------------------------

namespace {

// tiny_config on 4 x 4 images, every input of D augmented.
GanConfig tiny_augmented(const char* policy = "translation,cutout,color") {
    GanConfig c = tiny_config();
    c.data_dim = 16;
    c.d_leaky_slope = 0.2f;  // smooth enough between kinks for finite differences
    c.augment = parse_augment_policy(policy);
    return c;
}

// The gradients of `parameters` (zeroed first) after backward(loss).
std::vector<Tensor> gradients_of(const std::vector<Var>& parameters, const Var& loss) {
    for (Var p : parameters) p.zero_grad();
    backward(loss);
    std::vector<Tensor> out;
    for (const Var& p : parameters) out.push_back(p.grad());
    return out;
}

bool all_zero(const std::vector<Tensor>& tensors) {
    for (const Tensor& t : tensors) {
        for (float x : t) {
            if (x != 0.f) return false;
        }
    }
    return true;
}

}  // namespace

TEST_CASE("augmented D step: G untouched, D moves by -lr times the finite-difference gradient of the augmented loss") {
    GaussianData data(16, 0.5f, 1.f);
    Gan trained(tiny_augmented(), 7), reference(tiny_augmented(), 7);
    const auto g_before = values(trained.generator().parameters());
    const auto d_before = values(trained.discriminator().parameters());
    Rng replay = trained.rng();
    const Rng augment_replay = trained.augmentation().rng();

    gan::StepStats stats;
    trained.discriminator_step(data, stats);
    CHECK(identical(values(trained.generator().parameters()), g_before));
    CHECK_FALSE(identical(values(trained.discriminator().parameters()), d_before));

    Var real(Tensor::from_shape({4, 16})), noise(Tensor::from_shape({4, 3}));
    data.sample(real.mutable_value(), replay);
    replay.fill_uniform(noise.mutable_value(), -1.f, 1.f);
    const Var fake = reference.generate(noise);
    // Every evaluation sees the step's augmentation draws.
    const auto loss = [&] {
        reference.augmentation().rng() = augment_replay;
        return reference.discriminator_loss(real, fake);
    };
    const auto d_parameters = reference.discriminator().parameters();
    const GradcheckResult check = gradcheck([&](const std::vector<Var>&) { return loss(); }, d_parameters, loss_check_options());
    INFO(check.report());
    CHECK(check.ok);
    CHECK(stats.d_loss == doctest::Approx(loss().item()));
    CHECK(trained.augmentation().rng().state() == reference.augmentation().rng().state());  // the same draws, as many
    // Not the un-augmented loss.
    GanConfig unaugmented = tiny_augmented();
    unaugmented.augment = AugmentPolicy{};
    CHECK(stats.d_loss != doctest::Approx(Gan(unaugmented, 7).discriminator_loss(real, fake).item()).epsilon(1e-4));
    for (Var p : d_parameters) p.zero_grad();
    backward(loss());
    check_sgd_update(d_before, d_parameters, values(trained.discriminator().parameters()), 0.05f);
}

TEST_CASE("augmented G step: D untouched; G moves by -lr times the finite-difference gradient through the augmentation") {
    Gan trained(tiny_augmented(), 11), reference(tiny_augmented(), 11);
    const auto g_before = values(trained.generator().parameters());
    const auto d_before = values(trained.discriminator().parameters());
    Rng replay = trained.rng();
    const Rng augment_replay = trained.augmentation().rng();

    gan::StepStats stats;
    trained.generator_step(stats);
    CHECK(identical(values(trained.discriminator().parameters()), d_before));
    CHECK_FALSE(identical(values(trained.generator().parameters()), g_before));

    Var noise(Tensor::from_shape({4, 3}));
    replay.fill_uniform(noise.mutable_value(), -1.f, 1.f);
    const auto loss = [&] {
        reference.augmentation().rng() = augment_replay;
        return reference.generator_loss(noise);
    };
    const auto g_parameters = reference.generator().parameters();
    const GradcheckResult check = gradcheck([&](const std::vector<Var>&) { return loss(); }, g_parameters, loss_check_options());
    INFO(check.report());
    CHECK(check.ok);
    CHECK(stats.g_loss == doctest::Approx(loss().item()));
    const std::vector<Tensor> augmented = gradients_of(g_parameters, loss());
    check_sgd_update(g_before, g_parameters, values(trained.generator().parameters()), 0.05f);
    CHECK_FALSE(all_zero(augmented));

    // The same nets (the augmentation's stream leaves the training stream
    // alone) without augmentation: another gradient.
    GanConfig square = tiny_augmented();
    square.augment = AugmentPolicy{};
    Gan unaugmented(square, 11);
    CHECK(identical(values(unaugmented.generator().parameters()), g_before));
    const std::vector<Tensor> without = gradients_of(unaugmented.generator().parameters(), unaugmented.generator_loss(noise));
    CHECK_FALSE(all_zero(without));
    CHECK_FALSE(identical(augmented, without));
}

TEST_CASE("augmented dcgan: the D step changes only D (parameters and running statistics), the G step only G") {
    GaussianData data(64, 0.5f, 0.2f);
    GanConfig c = with_r1(tiny_dcgan(), 1.f, 2);  // R1 through the augmentation at the first D update
    c.augment = parse_augment_policy("translation,cutout,color");
    Gan g(c, 3), plain(with_r1(tiny_dcgan(), 1.f, 2), 3);
    const auto g_params = values(g.generator().parameters()), g_buffers = buffer_values(g.generator());
    const auto d_params = values(g.discriminator().parameters()), d_buffers = buffer_values(g.discriminator());
    gan::StepStats stats, plain_stats;
    g.discriminator_step(data, stats);
    plain.discriminator_step(data, plain_stats);
    CHECK(stats.penalty > 0.f);
    CHECK(std::isfinite(stats.d_loss));
    CHECK(stats.d_loss != plain_stats.d_loss);
    CHECK(identical(values(g.generator().parameters()), g_params));
    CHECK(identical(buffer_values(g.generator()), g_buffers));
    CHECK_FALSE(identical(values(g.discriminator().parameters()), d_params));
    CHECK_FALSE(identical(buffer_values(g.discriminator()), d_buffers));

    const auto d_params_after = values(g.discriminator().parameters()), d_buffers_after = buffer_values(g.discriminator());
    g.generator_step(stats);
    plain.generator_step(plain_stats);
    CHECK(identical(values(g.discriminator().parameters()), d_params_after));
    CHECK(identical(buffer_values(g.discriminator()), d_buffers_after));
    CHECK_FALSE(identical(values(g.generator().parameters()), g_params));
    CHECK_FALSE(identical(buffer_values(g.generator()), g_buffers));
    CHECK_FALSE(identical(values(g.generator().parameters()), values(plain.generator().parameters())));
}

TEST_CASE("an augmented GAN resumes bit-exactly: the augmentation's stream is in the checkpoint") {
    GaussianData data(64, 0.5f, 0.2f);
    GanConfig c = tiny_dcgan();
    c.augment = parse_augment_policy("translation,cutout,color");
    c.augment.probability = 0.5f;
    Gan straight(c, 5), first_half(c, 5);
    for (int i = 0; i < 4; ++i) straight.step(data);
    for (int i = 0; i < 2; ++i) first_half.step(data);
    Archive archive;
    first_half.save(archive);
    REQUIRE(archive.texts().count("augment_rng"));
    Gan resumed(c, 999);  // another seed: everything must come from the archive
    resumed.load(archive);
    for (int i = 0; i < 2; ++i) resumed.step(data);
    CHECK(identical(values(resumed.generator().parameters()), values(straight.generator().parameters())));
    CHECK(identical(values(resumed.discriminator().parameters()), values(straight.discriminator().parameters())));
    CHECK(identical(buffer_values(resumed.discriminator()), buffer_values(straight.discriminator())));
    CHECK(resumed.augmentation().rng().state() == straight.augmentation().rng().state());

    // Without augmentation nothing of it is saved; such a checkpoint does not resume an augmenting GAN.
    Gan plain(tiny_dcgan(), 5);
    Archive unaugmented;
    plain.save(unaugmented);
    CHECK_FALSE(unaugmented.texts().count("augment_rng"));
    CHECK_THROWS_WITH_AS(Gan(c, 5).load(unaugmented), doctest::Contains("trained without --augment"), std::runtime_error);
    GanConfig not_square = tiny_augmented();
    not_square.data_dim = 6;
    CHECK_THROWS_WITH_AS(Gan(not_square, 1), doctest::Contains("augmentation needs square images"), std::invalid_argument);
}

TEST_CASE("the hinge loss: D's is mean relu(1 - D(x)) + mean relu(1 + D(G(z))), G's -mean D(G(z))") {
    GanConfig c = tiny_config();
    c.objective = gan::Objective::hinge;
    Gan g(c, 3);
    // D's last weights scaled up: scores on both sides of the margins.
    Var head = g.discriminator().parameters()[2];
    for (float& w : head.mutable_value()) w *= 8.f;
    Var real(Tensor::from_shape({4, 6})), noise(Tensor::from_shape({4, 3}));
    Rng rng(5);
    rng.fill_normal(real.mutable_value(), 0.f, 3.f);
    rng.fill_uniform(noise.mutable_value(), -1.f, 1.f);
    const Var fake = g.generate(noise);
    Tensor real_scores, fake_scores;
    {
        NoGrad no_grad;
        real_scores = g.discriminator()(real).value();
        fake_scores = g.discriminator()(fake).value();
    }
    double d = 0, generator = 0;
    int clipped = 0;
    for (float x : real_scores) {
        d += std::max(0.0, 1.0 - x) / 4;
        clipped += x >= 1.f;
    }
    for (float x : fake_scores) {
        d += std::max(0.0, 1.0 + x) / 4;
        generator -= double(x) / 4;
        clipped += x <= -1.f;
    }
    INFO("real scores " << real_scores << ", fake scores " << fake_scores);
    CHECK(clipped > 0);  // the relu's zero side is exercised
    float mean_real = 0;
    CHECK(g.discriminator_loss(real, fake, &mean_real).item() == doctest::Approx(d).epsilon(1e-5));
    CHECK(mean_real == doctest::Approx((real_scores(0, 0) + real_scores(1, 0) + real_scores(2, 0) + real_scores(3, 0)) / 4));
    CHECK(g.generator_loss(noise).item() == doctest::Approx(generator).epsilon(1e-5));
}

TEST_CASE("a step with the hinge loss runs, changes both nets, and differs from one with the cross-entropy") {
    GaussianData data(6, 0.5f, 1.f);
    GanConfig hinge = tiny_config();
    hinge.objective = gan::Objective::hinge;
    Gan a(hinge, 4), b(tiny_config(), 4);
    const auto g_before = values(a.generator().parameters()), d_before = values(a.discriminator().parameters());
    const gan::StepStats sa = a.step(data), sb = b.step(data);
    CHECK(std::isfinite(sa.d_loss));
    CHECK(std::isfinite(sa.g_loss));
    CHECK(sa.d_loss != sb.d_loss);
    CHECK_FALSE(identical(values(a.generator().parameters()), g_before));
    CHECK_FALSE(identical(values(a.discriminator().parameters()), d_before));
    CHECK_FALSE(identical(values(a.discriminator().parameters()), values(b.discriminator().parameters())));
    CHECK_FALSE(identical(values(a.generator().parameters()), values(b.generator().parameters())));
}

namespace {

namespace fs = std::filesystem;

int run(const std::vector<std::string>& args) { return test::run_mnist_gan(args); }

// Rewrites the archive at path with the first element of each named tensor set.
void set_first_elements(const std::string& path, const std::vector<std::pair<std::string, float>>& values) {
    Archive archive = read_archive(path);
    for (const auto& [name, value] : values) {
        Tensor t = archive.tensor(name);
        t.flat(0) = value;
        archive.put(name, std::move(t));
    }
    xgrad::write_archive(path, archive);
}

std::vector<std::string> small_run(const fs::path& data, const fs::path& out, long steps) {
    auto args = test::tiny_run(data, out, steps);
    args.insert(args.end(), {"--grid-every", "2", "--checkpoint-every", "2", "--log-every", "1"});
    return args;
}

}  // namespace

TEST_CASE("mnist_gan runs end to end on a tiny IDX file and resumes bit-exactly") {
    test::TempDir dir;
    test::write_random_split(dir.path(), "train", 30);

    auto args = small_run(dir.path(), dir.path() / "out", 4);
    args.insert(args.end(), {"--samples", "5"});
    REQUIRE(run(args) == 0);
    for (const char* f : {"grid_0000002.png", "grid_0000004.png", "grid_final.png", "interpolation.png", "losses.png",
                          "discriminator.png", "checkpoint.xgrad", "log.csv", "samples.idx"}) {
        CHECK_MESSAGE(fs::exists(dir.path() / "out" / f), f);
    }
    const IdxImages samples = read_idx_images((dir.path() / "out" / "samples.idx").string());
    CHECK(samples.count == 5);
    CHECK(samples.rows == 28);
    std::ifstream log(dir.path() / "out" / "log.csv");
    std::string line;
    int lines = 0;
    while (std::getline(log, line)) ++lines;
    CHECK(lines == 5);  // header + one row per step

    // 4 steps straight == 2 steps, stop, resume for 2 more.
    REQUIRE(run(small_run(dir.path(), dir.path() / "split", 2)) == 0);
    auto resume = small_run(dir.path(), dir.path() / "split", 4);
    resume.push_back("--resume");
    REQUIRE(run(resume) == 0);
    const Archive straight = read_archive((dir.path() / "out" / "checkpoint.xgrad").string());
    const Archive split = read_archive((dir.path() / "split" / "checkpoint.xgrad").string());
    for (const char* name : {"generator.0.weight", "generator.2.bias", "discriminator.0.weight", "discriminator.3.weight",
                             "g_optimizer.m.0", "d_optimizer.v.3"}) {
        CAPTURE(name);
        const Tensor &a = straight.tensor(name), &b = split.tensor(name);
        REQUIRE(a.shape() == b.shape());
        CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
    }
    CHECK(straight.text("rng") == split.text("rng"));
}

TEST_CASE("mnist_gan --export writes both nets as safetensors from a checkpoint, PyTorch's names and layouts") {
    test::TempDir dir;
    test::write_random_split(dir.path(), "train", 30);
    REQUIRE(run(small_run(dir.path(), dir.path() / "out", 2)) == 0);
    // Nothing left to train: the final outputs, the export among them, come from the checkpoint.
    auto again = small_run(dir.path(), dir.path() / "out", 2);
    const fs::path exported = dir.path() / "exported";
    again.insert(again.end(), {"--resume", "--no-ema", "--export", exported.string()});
    REQUIRE(run(again) == 0);

    const auto g = xgrad::read_safetensors((exported / "generator.safetensors").string());
    const auto d = xgrad::read_safetensors((exported / "discriminator.safetensors").string());
    CHECK(g.at("0.weight").shape == Shape{16, 10});  // Linear(z 10 -> hidden 16), stored (out, in)
    CHECK(g.at("0.bias").shape == Shape{16});
    // The raw generator (--no-ema) is the checkpoint's, bit for bit.
    const Archive checkpoint = read_archive((dir.path() / "out" / "checkpoint.xgrad").string());
    const Tensor& saved = checkpoint.tensor("generator.0.weight");
    REQUIRE(saved.shape() == g.at("0.weight").values.shape());
    CHECK(std::memcmp(saved.data(), g.at("0.weight").values.data(), saved.size() * sizeof(float)) == 0);
    CHECK(!d.empty());
    for (const auto& entry : d) {
        CAPTURE(entry.first);
        CHECK(std::all_of(entry.second.values.begin(), entry.second.values.end(), [](float v) { return std::isfinite(v); }));
    }
}

TEST_CASE("mnist_gan --generator draws what the run that exported the generator drew, byte for byte") {
    test::TempDir dir;
    test::write_random_split(dir.path(), "train", 30);
    const fs::path exported = dir.path() / "exported", trained = dir.path() / "trained", sampled = dir.path() / "sampled";
    // The mlp preset samples its averaged generator: the export must carry that one.
    auto train = small_run(dir.path(), trained, 3);
    train.insert(train.end(), {"--samples", "7", "--export", exported.string()});
    REQUIRE(run(train) == 0);
    const std::vector<std::string> sample = {"--preset",  "mlp", "--hidden",    "16",
                                             "--z-dim",   "10",  "--generator", (exported / "generator.safetensors").string(),
                                             "--samples", "7",   "--out",       sampled.string()};
    REQUIRE(run(sample) == 0);
    CHECK(test::file_bytes(sampled / "samples.idx") == test::file_bytes(trained / "samples.idx"));
    CHECK(test::file_bytes(sampled / "grid_final.png") == test::file_bytes(trained / "grid_final.png"));
    CHECK(test::file_bytes(sampled / "interpolation.png") == test::file_bytes(trained / "interpolation.png"));
    CHECK_FALSE(fs::exists(sampled / "checkpoint.xgrad"));

    // --noise: the exported noise draws the run's grid; other noise another grid.
    const fs::path noise_file = exported / "noise.safetensors", noised = dir.path() / "noised";
    auto with_noise = sample;
    with_noise.back() = noised.string();
    with_noise.insert(with_noise.end(), {"--noise", noise_file.string()});
    REQUIRE(run(with_noise) == 0);
    CHECK(test::file_bytes(noised / "grid_final.png") == test::file_bytes(trained / "grid_final.png"));
    const auto z = xgrad::read_safetensors(noise_file.string()).at("z");
    CHECK(z.shape == Shape{64, 10});
    const Tensor halved = z.values * 0.5f;
    xgrad::write_safetensors(noise_file.string(), {{"z", halved}});
    REQUIRE(run(with_noise) == 0);
    CHECK(test::file_bytes(noised / "grid_final.png") != test::file_bytes(trained / "grid_final.png"));
    // A file without z, or z of another width, or a NaN in z is refused.
    xgrad::write_safetensors(noise_file.string(), {{"noise", halved}});
    CHECK(run(with_noise) != 0);
    xgrad::write_safetensors(noise_file.string(), {{"z", Tensor({3, 11}, 0.5f)}});  // initialised: NaN is refused on writing
    CHECK(run(with_noise) != 0);
    xgrad::write_safetensors(noise_file.string(), {{"z", halved}});
    std::string bytes = test::file_bytes(noise_file);
    const float nan = std::numeric_limits<float>::quiet_NaN();
    std::memcpy(&bytes[bytes.size() - sizeof nan], &nan, sizeof nan);  // the data's last float
    std::ofstream(noise_file, std::ios::binary | std::ios::trunc) << bytes;
    CHECK(run(with_noise) != 0);

    // A flag only training reads, or a net of another shape, is refused.
    auto with_steps = sample;
    with_steps.insert(with_steps.end(), {"--steps", "5"});
    CHECK(run(with_steps) != 0);
    auto with_minutes = sample;
    with_minutes.insert(with_minutes.end(), {"--minutes", "1"});
    CHECK(run(with_minutes) != 0);
    auto wider = sample;
    wider[3] = "32";  // --hidden 32: the file's weights have 16 rows
    CHECK(run(wider) != 0);
}

TEST_CASE("mnist_gan --grid-scale draws the grid's pixels as squares") {
    test::TempDir dir;
    test::write_random_split(dir.path(), "train", 30);
    auto args = small_run(dir.path(), dir.path() / "out", 1);
    args.insert(args.end(), {"--grid-scale", "2"});
    REQUIRE(run(args) == 0);
    const test::Png png = test::read_png((dir.path() / "out" / "grid_final.png").string());
    CHECK(png.width == 8 * (2 * 28 + 2) + 2);
}

TEST_CASE("mnist_gan rejects bad input with a message, not a crash") {
    test::TempDir dir;
    CHECK(run({"--data", (dir.path() / "missing").string(), "--out", (dir.path() / "out").string(), "--steps", "1"}) == 1);
    CHECK(run({"--steps", "0"}) != 0);
    CHECK(run({"--preset", "fancy"}) != 0);
    test::write_random_split(dir.path(), "train", 3);
    CHECK(run({"--data", dir.path().string(), "--out", (dir.path() / "out").string(), "--resume", "--steps", "2"}) == 1);
}

namespace {

struct Outcome {
    int code;
    std::string err;  // what the run wrote to std::cerr
};

Outcome run_capturing(const std::vector<std::string>& args) {
    std::ostringstream captured;
    std::streambuf* const original = std::cerr.rdbuf(captured.rdbuf());
    int code;
    try {
        code = run(args);
    } catch (...) {
        std::cerr.rdbuf(original);
        throw;
    }
    std::cerr.rdbuf(original);
    return {code, captured.str()};
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// A flag that changes only how G is sampled: a 4-step run with it and one
// without train G bit for bit alike and write different samples.idx.
// Returns the stderr of the run with the flag.
std::string check_sampling_flag(std::initializer_list<std::string> flag) {
    test::TempDir dir;
    test::write_random_split(dir.path(), "train", 30);
    const fs::path plain = dir.path() / "plain", flagged = dir.path() / "flagged";
    auto plain_args = small_run(dir.path(), plain, 4), flagged_args = small_run(dir.path(), flagged, 4);
    plain_args.insert(plain_args.end(), {"--samples", "5"});
    flagged_args.insert(flagged_args.end(), {"--samples", "5"});
    flagged_args.insert(flagged_args.end(), flag);
    REQUIRE(run(plain_args) == 0);
    const Outcome flagged_run = run_capturing(flagged_args);
    INFO(flagged_run.err);
    REQUIRE(flagged_run.code == 0);
    const IdxImages p = read_idx_images((plain / "samples.idx").string());
    const IdxImages f = read_idx_images((flagged / "samples.idx").string());
    REQUIRE(p.pixels.size() == f.pixels.size());
    CHECK(p.pixels != f.pixels);
    const Archive cp = read_archive((plain / "checkpoint.xgrad").string());
    const Archive cf = read_archive((flagged / "checkpoint.xgrad").string());
    const Tensor &wp = cp.tensor("generator.0.weight"), &wf = cf.tensor("generator.0.weight");
    CHECK(std::memcmp(wp.data(), wf.data(), wp.size() * sizeof(float)) == 0);
    return flagged_run.err;
}

// args with each option of `changes` set: its value replaced, or appended with it.
std::vector<std::string> with(std::vector<std::string> args, std::initializer_list<std::string> changes) {
    for (auto c = changes.begin(); c != changes.end(); ++c) {
        const auto found = std::find(args.begin(), args.end(), *c);
        const bool flag = *c == "--resume";
        if (found == args.end()) {
            args.push_back(*c);
            if (!flag) args.push_back(*std::next(c));
        } else if (!flag) {
            *std::next(found) = *std::next(c);
        }
        if (!flag) ++c;
    }
    return args;
}

}  // namespace

TEST_CASE("mnist_gan stops on a non-finite loss and keeps the last good checkpoint") {
    test::TempDir dir;
    test::write_random_split(dir.path(), "train", 30);
    const fs::path out = dir.path() / "out";
    // The reference preset: no spectral norm in D, which would undo what follows.
    REQUIRE(run(with(small_run(dir.path(), out, 2), {"--preset", "reference"})) == 0);

    // About to diverge, though finite (--resume refuses a non-finite
    // checkpoint): every value of D is the largest float, so D's output
    // overflows to +inf on the first batch, and its loss with it.
    const std::string checkpoint = (out / "checkpoint.xgrad").string();
    const Archive saved = read_archive(checkpoint);
    Archive archive = saved;
    for (const auto& [name, t] : saved.tensors()) {
        if (name.rfind("discriminator.", 0) == 0) archive.put(name, Tensor(t.shape(), std::numeric_limits<float>::max()));
    }
    xgrad::write_archive(checkpoint, archive);
    const std::string before = test::file_bytes(checkpoint);

    const auto resume = with(small_run(dir.path(), out, 6), {"--preset", "reference", "--resume"});
    CHECK(run(resume) == 3);
    CHECK(test::file_bytes(checkpoint) == before);      // not overwritten by the diverged state
    CHECK_FALSE(fs::exists(out / "grid_0000004.png"));  // stopped at the first step
}

TEST_CASE("mnist_gan never checkpoints a non-finite parameter, even after a finite loss") {
    test::TempDir dir;
    test::write_random_split(dir.path(), "train", 30);
    const fs::path out = dir.path() / "out";
    REQUIRE(run(small_run(dir.path(), out, 2)) == 0);

    // Hidden unit 0 of G is dead (bias -100: ReLU output 0 for every z), so
    // its bias gets a zero gradient and every loss stays finite; but with
    // Adam's m = 1e38 and v = 0 its update m / (sqrt(v) + eps) overflows
    // and the bias becomes -inf.
    const std::string checkpoint = (out / "checkpoint.xgrad").string();
    set_first_elements(checkpoint, {{"generator.0.bias", -100.f}, {"g_optimizer.m.1", 1e38f}, {"g_optimizer.v.1", 0.f}});
    const std::string before = test::file_bytes(checkpoint);

    const Outcome r = run_capturing(with(small_run(dir.path(), out, 5), {"--resume"}));
    INFO(r.err);
    CHECK(r.code == 3);
    CHECK(contains(r.err, "diverged at step 4"));
    CHECK(contains(r.err, "'generator.0.bias' holds -inf at element 0"));
    CHECK(test::file_bytes(checkpoint) == before);  // the last good checkpoint
}

TEST_CASE("mnist_gan fails loudly when log.csv cannot be written") {
    test::TempDir dir;
    test::write_random_split(dir.path(), "train", 30);
    const fs::path out = dir.path() / "out";
    fs::create_directories(out);
    fs::create_symlink("/dev/full", out / "log.csv");
    const Outcome r = run_capturing(small_run(dir.path(), out, 2));
    INFO(r.err);
    CHECK(r.code == 1);
    CHECK(contains(r.err, "cannot write '" + (out / "log.csv").string() + "': No space left on device"));
    CHECK_FALSE(contains(r.err, "done:"));
}

TEST_CASE("after a resume, log.csv holds each step once: rows logged after the checkpoint are dropped") {
    test::TempDir dir;
    test::write_random_split(dir.path(), "train", 30);
    const fs::path out = dir.path() / "out";
    REQUIRE(run(small_run(dir.path(), out, 2)) == 0);
    const std::string step2 = test::file_bytes(out / "checkpoint.xgrad");
    REQUIRE(run(with(small_run(dir.path(), out, 4), {"--resume"})) == 0);
    // As if killed after logging steps 3 and 4 but before their checkpoint.
    std::ofstream(out / "checkpoint.xgrad", std::ios::binary) << step2;
    REQUIRE(run(with(small_run(dir.path(), out, 5), {"--resume"})) == 0);

    const std::vector<std::string> lines = test::lines_of(out / "log.csv");
    REQUIRE(lines.size() == 6);
    CHECK(lines[0] == "step,d_loss,g_loss,d_real,d_fake");
    for (std::size_t i = 1; i < lines.size(); ++i) CHECK(lines[i].rfind(std::to_string(i) + ",", 0) == 0);
}

TEST_CASE("--resume refuses changed training settings, naming the setting and both values") {
    test::TempDir dir;
    test::write_random_split(dir.path(), "train", 30);
    const fs::path out = dir.path() / "out";
    const auto base = small_run(dir.path(), out, 2);
    REQUIRE(run(base) == 0);
    const std::string checkpoint = test::file_bytes(out / "checkpoint.xgrad");

    const fs::path other_data = dir.path() / "other";
    fs::create_directories(other_data);
    test::write_random_split(other_data, "train", 31);
    const auto on_other_data = with(small_run(other_data, out, 4), {"--resume"});
    const std::pair<std::vector<std::string>, std::vector<std::string>> changes[] = {
        {with(small_run(dir.path(), out, 4), {"--resume", "--lr", "0.01"}),
         {"--lr is 0.00999999978 in this run but 0.00079999998"}},
        {with(small_run(dir.path(), out, 4), {"--resume", "--k", "2"}), {"--k is 2 in this run but 1"}},
        {with(small_run(dir.path(), out, 4), {"--resume", "--g-loss", "minimax"}),
         {"--g-loss is minimax in this run but non-saturating"}},
        {with(small_run(dir.path(), out, 4), {"--resume", "--seed", "2"}), {"--seed is 2 in this run but 1"}},
        {with(small_run(dir.path(), out, 4), {"--resume", "--loss", "hinge"}), {"--loss is hinge in this run but bce"}},
        {with(small_run(dir.path(), out, 4), {"--resume", "--augment", "cutout"}),
         {"the checkpoint holds no augmentation state (it was trained without --augment), this run augments (--augment "
          "cutout)"}},
        {with(small_run(dir.path(), out, 4), {"--resume", "--preset", "reference"}), {"preset 'mlp'", "preset 'reference'"}},
        {on_other_data, {"--data (training images) is 31 images of 28 x 28 pixels", "but 30 images of 28 x 28 pixels"}},
    };
    for (const auto& [args, expected] : changes) {
        const std::string last_argument = args.back();  // clang cannot capture a structured binding
        CAPTURE(last_argument);
        const Outcome r = run_capturing(args);
        INFO(r.err);
        CHECK(r.code == 1);
        for (const std::string& part : expected) CHECK(contains(r.err, part));
        CHECK(contains(r.err, (out / "checkpoint.xgrad").string()));
    }
    const Outcome b = run_capturing(with(small_run(dir.path(), out, 4), {"--resume", "--batch", "16"}));
    CHECK(b.code == 1);
    CHECK(contains(b.err, "--batch is 16 in this run but 8"));
    CHECK(test::file_bytes(out / "checkpoint.xgrad") == checkpoint);  // refused runs change nothing

    // Safe to change; --threads only loses bit-exactness, and says so.
    const Outcome t = run_capturing(
        with(small_run(dir.path(), out, 3), {"--resume", "--threads", "2", "--grid-every", "0", "--log-every", "3"}));
    INFO(t.err);
    CHECK(t.code == 0);
    CHECK(contains(t.err, "--threads 2 differs from the checkpoint's 1"));
    CHECK(contains(t.err, "no longer bit-identical"));

    // --steps below the checkpoint's is an error; equal to it, nothing is trained.
    const Outcome below = run_capturing(with(small_run(dir.path(), out, 2), {"--resume"}));
    CHECK(below.code == 1);
    CHECK(contains(below.err, "--steps 2: the checkpoint '" + (out / "checkpoint.xgrad").string() + "' is already at step 3"));
    const Outcome equal = run_capturing(with(small_run(dir.path(), out, 3), {"--resume"}));
    CHECK(equal.code == 0);
    CHECK(contains(equal.err, "nothing to train"));
    CHECK(gan::verify_checkpoint((out / "checkpoint.xgrad").string(), [] {
              GanConfig c = gan::mlp_preset();
              c.batch = 8;
              c.hidden = 16;
              c.z_dim = 10;
              return c;
          }()) == 3);
}

TEST_CASE("mnist_gan --augment resumes bit-exactly, and --resume keeps the augmentation settings") {
    test::TempDir dir;
    test::write_random_split(dir.path(), "train", 30);
    const auto augmented = [&](const fs::path& out, long steps) {
        return with(small_run(dir.path(), out, steps), {"--augment", "translation,cutout,color", "--augment-p", "0.5"});
    };
    const Outcome straight_run = run_capturing(augmented(dir.path() / "out", 4));
    INFO(straight_run.err);
    REQUIRE(straight_run.code == 0);
    CHECK(contains(straight_run.err, "augment=translation,cutout,color p=0.5"));
    REQUIRE(run(augmented(dir.path() / "split", 2)) == 0);
    REQUIRE(run(with(augmented(dir.path() / "split", 4), {"--resume"})) == 0);
    const Archive straight = read_archive((dir.path() / "out" / "checkpoint.xgrad").string());
    const Archive split = read_archive((dir.path() / "split" / "checkpoint.xgrad").string());
    for (const auto& entry : straight.tensors()) {
        const std::string& name = entry.first;  // clang cannot capture a structured binding
        CAPTURE(name);
        const Tensor &a = entry.second, &b = split.tensor(name);
        REQUIRE(a.shape() == b.shape());
        CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
    }
    CHECK(straight.text("rng") == split.text("rng"));
    CHECK(straight.text("augment_rng") == split.text("augment_rng"));
    CHECK(straight.text("settings.augment") == "translation,cutout,color");

    // Another augmentation, or none, is refused naming the setting and both values.
    const fs::path out = dir.path() / "split";
    const std::pair<std::vector<std::string>, std::string> changes[] = {
        {with(small_run(dir.path(), out, 5), {"--resume"}), "--augment is none in this run but translation,cutout,color"},
        {with(augmented(out, 5), {"--resume", "--augment", "translation"}),
         "--augment is translation in this run but translation,cutout,color"},
        {with(augmented(out, 5), {"--resume", "--augment-p", "0.25"}), "--augment-p is 0.25 in this run but 0.5"},
    };
    for (const auto& [args, message] : changes) {
        const std::string expected = message;  // clang cannot capture a structured binding
        CAPTURE(expected);
        const Outcome r = run_capturing(args);
        INFO(r.err);
        CHECK(r.code == 1);
        CHECK(contains(r.err, expected));
    }
}

TEST_CASE("mnist_gan --channels sets the dcgan nets' widths, and a checkpoint of other widths is refused") {
    test::TempDir dir;
    test::write_random_split(dir.path(), "train", 30);
    const fs::path out = dir.path() / "out";
    const auto dcgan = [&](long steps, const char* channels) {
        return std::vector<std::string>{
            "--data", dir.path().string(), "--out", out.string(), "--steps", std::to_string(steps), "--preset",
            "dcgan",  "--batch",           "4",     "--channels", channels,  "--grid-every",        "0"};
    };
    REQUIRE(run(dcgan(2, "3")) == 0);
    gan::GanConfig three = gan::dcgan_preset();
    three.batch = 4;
    three.channels = 3;
    CHECK(gan::verify_checkpoint((out / "checkpoint.xgrad").string(), three) == 2);
    const Outcome wider = run_capturing(with(dcgan(3, "4"), {"--resume"}));
    INFO(wider.err);
    CHECK(wider.code == 1);
    CHECK(contains(wider.err, "dcgan channels=3"));
    CHECK(contains(wider.err, "dcgan channels=4"));
}

TEST_CASE("a malformed checkpoint is refused naming the file and the field") {
    test::TempDir dir;
    test::write_random_split(dir.path(), "train", 30);
    const fs::path out = dir.path() / "out";
    REQUIRE(run(small_run(dir.path(), out, 2)) == 0);
    const std::string path = (out / "checkpoint.xgrad").string();
    const Archive good = read_archive(path);
    const auto resume = with(small_run(dir.path(), out, 4), {"--resume"});

    for (const char* steps : {"7junk", "-3", " 2", "", "99999999999999999999"}) {
        CAPTURE(steps);
        Archive bad = good;
        bad.put_text("steps", steps);
        xgrad::write_archive(path, bad);
        const Outcome r = run_capturing(resume);
        INFO(r.err);
        CHECK(r.code == 1);
        CHECK(contains(r.err, "'" + path + "': the text 'steps' is '" + steps + "', expected a step count"));
    }
    Archive bad_rng = good;
    bad_rng.put_text("rng", "not a state");
    xgrad::write_archive(path, bad_rng);
    CHECK(contains(run_capturing(resume).err, "'" + path + "': the text 'rng' is not a saved random state"));

    // A classifier where the checkpoint should be.
    quality::ClassifierConfig c;
    c.hidden = 4;
    quality::Classifier(c, 1).save(path);
    const Outcome r = run_capturing(resume);
    INFO(r.err);
    CHECK(r.code == 1);
    CHECK(contains(r.err, "'" + path + "' is not an mnist_gan checkpoint"));
    CHECK(contains(r.err, "it holds a classifier written by mnist_classifier"));
}

TEST_CASE("--resume refuses a checkpoint with a valid CRC but values no run writes, naming the entry") {
    test::TempDir dir;
    test::write_random_split(dir.path(), "train", 30);
    const fs::path out = dir.path() / "out";
    const auto dcgan = [&](long steps) {
        return std::vector<std::string>{
            "--data", dir.path().string(), "--out", out.string(), "--steps", std::to_string(steps), "--preset",
            "dcgan",  "--batch",           "4",     "--channels", "3",       "--grid-every",        "0"};
    };
    REQUIRE(run(dcgan(2)) == 0);
    const std::string path = (out / "checkpoint.xgrad").string();
    const Archive good = read_archive(path);
    const auto with_first = [&](const std::string& name, float value) {
        Archive bad = good;
        Tensor t = bad.tensor(name);
        t.flat(0) = value;
        bad.put(name, std::move(t));
        return bad;
    };
    const auto with_text = [&](const std::string& name, const std::string& text) {
        Archive bad = good;
        bad.put_text(name, text);
        return bad;
    };
    const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
    const std::pair<Archive, std::string> cases[] = {
        {with_first("generator.0.weight", nan), "entry 'generator.0.weight' holds nan at element 0"},
        {with_first("d_optimizer.m.2", inf), "entry 'd_optimizer.m.2' holds inf at element 0"},
        {with_first("generator_average.4.weight", -inf), "entry 'generator_average.4.weight' holds -inf at element 0"},
        {with_first("generator.2.running_var", -0.5f),
         "entry 'generator.2.running_var' holds -0.5 at element 0, but a variance is never negative"},
        {with_first("g_optimizer.v.1", -1.f),
         "entry 'g_optimizer.v.1' holds -1 at element 0, but Adam's second moment is never negative"},
        {with_text("steps", "4000000000"), "the text 'steps' is 4000000000, past the 100000000 steps a run can take"},
        {with_text("g_optimizer.t", "7"), "the text 'g_optimizer.t' is 7, but a checkpoint at step 2 has 2"},
        {with_text("generator_average.updates", "0"),
         "the text 'generator_average.updates' is 0, but a checkpoint at step 2 has 2"},
    };
    for (const auto& [archive, message] : cases) {
        const std::string expected = message;  // clang cannot capture a structured binding
        CAPTURE(expected);
        xgrad::write_archive(path, archive);
        const Outcome r = run_capturing(with(dcgan(4), {"--resume"}));
        INFO(r.err);
        CHECK(r.code == 1);
        CHECK(contains(r.err, "'" + path + "': " + expected));
    }
    xgrad::write_archive(path, good);
    CHECK(run(with(dcgan(3), {"--resume"})) == 0);
}

TEST_CASE("flags that do nothing for the chosen preset are refused, naming the flag and the preset") {
    test::TempDir dir;
    test::write_random_split(dir.path(), "train", 30);
    const fs::path out = dir.path() / "out";
    const std::string existing = (dir.path() / "generator.safetensors").string();  // refused before it is read
    std::ofstream(existing) << "not read";
    const auto preset = [&](const char* name, std::initializer_list<std::string> extra) {
        std::vector<std::string> args{"--data", dir.path().string(), "--out", out.string(), "--steps", "1", "--preset", name};
        args.insert(args.end(), extra.begin(), extra.end());
        return args;
    };
    const auto sampling = [&](std::initializer_list<std::string> extra) {
        std::vector<std::string> args{"--out", out.string(), "--preset", "mlp", "--generator", existing};
        args.insert(args.end(), extra.begin(), extra.end());
        return args;
    };
    const std::pair<std::vector<std::string>, const char*> cases[] = {
        {preset("mlp", {"--channels", "32"}), "--channels 32: the mlp preset has no convolutions (its width is --hidden)"},
        {preset("reference", {"--channels", "32"}), "--channels 32: the reference preset has no convolutions"},
        {preset("dcgan", {"--hidden", "64"}), "--hidden 64: the dcgan preset has no hidden fully connected layers"},
        {preset("default", {"--hidden", "64"}), "--hidden 64: the cdcgan preset"},
        {preset("mlp", {"--sample-batch-stats"}), "--sample-batch-stats: the mlp preset has no batch norm"},
        {preset("reference", {"--no-ema"}), "--no-ema: the reference preset keeps no averaged generator"},
        {preset("reference", {"--ema"}), "--ema: the reference preset keeps no averaged generator"},
        {preset("mlp", {"--augment", "translation,blur"}),
         "--augment: augmentation policy 'translation,blur': unknown part 'blur' (expected translation, cutout and color"},
        {preset("mlp", {"--augment-p", "0.5"}), "--augment-p: there is no augmentation to apply (it goes with --augment"},
        {preset("dcgan", {"--augment", "none", "--augment-p", "0.5"}), "--augment-p: there is no augmentation to apply"},
        {preset("wgan-gp", {"--loss", "hinge"}), "--loss hinge: the wgan-gp preset plays the Wasserstein game"},
        {preset("wgan-gp", {"--loss", "bce"}), "--loss bce: the wgan-gp preset plays the Wasserstein game"},
        {preset("dcgan", {"--loss", "hinge", "--g-loss", "minimax"}), "--g-loss minimax: --loss hinge fixes G's loss"},
        {sampling({"--augment", "cutout"}), "--augment: --generator trains nothing, it samples the file's net"},
        {sampling({"--augment-p", "0.5"}), "--augment-p: --generator trains nothing, it samples the file's net"},
        {sampling({"--loss", "hinge"}), "--loss: --generator trains nothing, it samples the file's net"},
    };
    for (const auto& [args, message] : cases) {
        const std::string expected = message;  // clang cannot capture a structured binding
        CAPTURE(expected);
        const Outcome r = run_capturing(args);
        INFO(r.err);
        CHECK(r.code == 1);
        CHECK(contains(r.err, "mnist_gan: error: " + expected));
        CHECK_FALSE(fs::exists(out / "checkpoint.xgrad"));
    }
}

TEST_CASE("--no-ema samples the raw generator: same training, different samples.idx") { check_sampling_flag({"--no-ema"}); }

TEST_CASE("--truncation scales the samples' noise: same training, different samples.idx") {
    CHECK(contains(check_sampling_flag({"--truncation", "0.5"}), " truncation=0.5\n"));
    CHECK(run({"--truncation", "0"}) != 0);
    CHECK(run({"--truncation", "1.01"}) != 0);
}

TEST_CASE("truncated output noise: z times psi, a conditional GAN's one-hot untouched") {
    const auto check_scaled = [](const Tensor& full, const Tensor& truncated, std::size_t z_dim) {
        REQUIRE(full.shape() == truncated.shape());
        for (std::size_t r = 0; r < full.shape()[0]; ++r) {
            for (std::size_t i = 0; i < full.shape()[1]; ++i) {
                CAPTURE(r);
                CAPTURE(i);
                CHECK(truncated(r, i) == (i < z_dim ? 0.5f * full(r, i) : full(r, i)));
            }
        }
    };
    check_scaled(gan::grid_noise(5, 3, 4).value(), gan::grid_noise(5, 3, 4, 0.5f).value(), 5);
    check_scaled(gan::walk_ends(5, 3, 4).value(), gan::walk_ends(5, 3, 4, 0.5f).value(), 5);
    check_scaled(gan::grid_noise(6, 3).value(), gan::grid_noise(6, 3, 0, 0.5f).value(), 6);
    // The default samples the conditional nets at psi = 0.95 (docs/evaluation.md, "Truncation"); the others untruncated.
    CHECK(gan::preset("default").sample_truncation == 0.95f);
    CHECK(gan::preset("dcgan").sample_truncation == 1.f);
}

TEST_CASE("mnist_gan removes its own stale temporary files on start, and nothing else") {
    test::TempDir dir;
    test::write_random_split(dir.path(), "train", 30);
    const fs::path out = dir.path() / "out";
    fs::create_directories(out);
    const char* stale[] = {"checkpoint.xgrad.tmp", "samples.idx.tmp", "grid_0000002.png.tmp",
                           "log.csv.tmp",          "losses.png.tmp",  "interpolation.png.tmp"};
    for (const char* name : stale) std::ofstream(out / name) << "partial";
    std::ofstream(out / "notes.tmp") << "the user's";
    std::ofstream(out / "grid.tmp") << "the user's";

    const Outcome r = run_capturing(with(small_run(dir.path(), out, 1), {"--grid-every", "0", "--checkpoint-every", "0"}));
    INFO(r.err);
    REQUIRE(r.code == 0);
    for (const char* name : stale) CHECK_MESSAGE(!fs::exists(out / name), name);
    CHECK(fs::exists(out / "notes.tmp"));
    CHECK(fs::exists(out / "grid.tmp"));
    CHECK(contains(r.err, "removed " + (out / "samples.idx.tmp").string()));
}

TEST_CASE("numeric options are parsed strictly, naming the option and what it expects") {
    test::TempDir dir;
    test::write_random_split(dir.path(), "train", 30);
    const fs::path out = dir.path() / "out";
    const std::pair<std::vector<std::string>, const char*> bad[] = {
        {{"--seed", "-1"}, "--seed: expected an integer from 0 to 18446744073709551615, got '-1'"},
        {{"--seed", "18446744073709551617"}, "--seed: expected an integer from 0 to 18446744073709551615"},
        {{"--seed", "1e23"}, "--seed: expected an integer"},
        {{"--seed", "0x10"}, "--seed: expected an integer"},
        {{"--lr", "nan"}, "--lr: expected a number from 1e-07 to 1, got 'nan'"},
        {{"--lr", "inf"}, "--lr: expected a number"},
        {{"--lr", "0x1p-4"}, "--lr: expected a number"},
        {{"--lr", "2"}, "--lr: expected a number from 1e-07 to 1, got '2'"},
        {{"--steps", "7junk"}, "--steps: expected an integer from 1 to 100000000, got '7junk'"},
        {{"--batch", " 8"}, "--batch: expected an integer from 1 to 65536"},
        {{"--threads", "+2"}, "--threads: expected an integer from 1 to 256"},
        {{"--minutes", "0"}, "--minutes: expected a number greater than 0 and at most 1e+06, got '0'"},
        {{"--minutes", "-0.5"}, "--minutes: expected a number greater than 0 and at most 1e+06, got '-0.5'"},
        {{"--minutes", "nan"}, "--minutes: expected a number greater than 0"},
        {{"--minutes", "inf"}, "--minutes: expected a number greater than 0"},
        {{"--minutes", "five"}, "--minutes: expected a number greater than 0"},
        {{"--minutes", "2e6"}, "--minutes: expected a number greater than 0 and at most 1e+06, got '2e6'"},
        {{"--augment-p", "1.5"}, "--augment-p: expected a number from 0 to 1, got '1.5'"},
        {{"--loss", "wasserstein"}, "--loss: wasserstein not in {bce,hinge}"},
    };
    for (const auto& [extra, message] : bad) {
        const std::string option = extra[0] + " " + extra[1];  // clang cannot capture a structured binding
        CAPTURE(option);
        auto args = small_run(dir.path(), out, 1);
        args.insert(args.end(), extra.begin(), extra.end());
        const Outcome r = run_capturing(args);
        INFO(r.err);
        CHECK(r.code != 0);
        CHECK(contains(r.err, message));
    }
    CHECK_FALSE(fs::exists(out));  // every run was refused before starting
    CHECK(run(with(small_run(dir.path(), out, 1), {"--seed", "18446744073709551615", "--lr", "2.5e-4"})) == 0);
    CHECK(run(with(small_run(dir.path(), dir.path() / "fractional", 1), {"--minutes", ".5"})) == 0);
}

namespace {

long checkpoint_step(const fs::path& out) { return read_archive((out / "checkpoint.xgrad").string()).integer("steps"); }

// The step of log.csv's last row.
long last_logged_step(const fs::path& out) { return std::stol(test::lines_of(out / "log.csv").back()); }

}  // namespace

TEST_CASE("--minutes stops at the end of the first step past the budget, records the step, and resumes") {
    test::TempDir dir;
    test::write_random_split(dir.path(), "train", 30);
    const fs::path out = dir.path() / "out";
    // 1e-9 minutes (60 ns) are spent by any step: exactly one step of 1000
    // (~1 s if the budget were ignored); the final outputs are all written.
    const auto budget = with(small_run(dir.path(), out, 1000), {"--minutes", "1e-9", "--log-every", "1000"});
    const Outcome first = run_capturing(budget);
    INFO(first.err);
    REQUIRE(first.code == 0);
    CHECK(checkpoint_step(out) == 1);
    CHECK(last_logged_step(out) == 1);  // the last step is logged, though not a multiple of --log-every
    CHECK(contains(first.err, "the time budget ran out at step 1 of --steps 1000"));
    CHECK(contains(first.err, "done: 1 steps (stopped by --minutes)"));
    for (const char* f : {"grid_final.png", "interpolation.png", "losses.png"}) CHECK_MESSAGE(fs::exists(out / f), f);

    // Resumed, a run gets a fresh budget: one more step, bit-exact with an uninterrupted run.
    const Outcome second = run_capturing(with(budget, {"--resume"}));
    INFO(second.err);
    REQUIRE(second.code == 0);
    CHECK(checkpoint_step(out) == 2);
    // Without --minutes, --steps alone ends it again.
    REQUIRE(run(with(small_run(dir.path(), out, 4), {"--resume", "--log-every", "1000"})) == 0);
    CHECK(checkpoint_step(out) == 4);
    REQUIRE(run(with(small_run(dir.path(), dir.path() / "straight", 4), {"--log-every", "1000"})) == 0);
    const Archive resumed = read_archive((out / "checkpoint.xgrad").string());
    const Archive straight = read_archive((dir.path() / "straight" / "checkpoint.xgrad").string());
    for (const char* name : {"generator.0.weight", "discriminator.0.weight", "g_optimizer.m.0"}) {
        CAPTURE(name);
        const Tensor &a = resumed.tensor(name), &b = straight.tensor(name);
        REQUIRE(a.shape() == b.shape());
        CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
    }
    CHECK(test::lines_of(out / "log.csv").size() == 4);  // the header, steps 1 and 2 (budgets), 4 (--steps)
}

TEST_CASE("--minutes runs as long as its budget, and --steps stays an upper bound") {
    test::TempDir dir;
    test::write_random_split(dir.path(), "train", 30);
    const fs::path out = dir.path() / "out";
    // 0.12 s of steps of ~1 ms: many steps, far fewer than --steps.
    const auto start = std::chrono::steady_clock::now();
    const Outcome r = run_capturing(
        with(small_run(dir.path(), out, 20000), {"--minutes", "0.002", "--grid-every", "0", "--checkpoint-every", "0"}));
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    INFO(r.err);
    REQUIRE(r.code == 0);
    CHECK(seconds >= 0.12);
    const long steps = checkpoint_step(out);
    CHECK(steps > 1);
    CHECK(steps < 20000);
    CHECK(last_logged_step(out) == steps);
    CHECK(contains(r.err, "done: " + std::to_string(steps) + " steps (stopped by --minutes)"));

    const fs::path bounded = dir.path() / "bounded";
    const Outcome b = run_capturing(with(small_run(dir.path(), bounded, 3), {"--minutes", "10"}));
    INFO(b.err);
    REQUIRE(b.code == 0);
    CHECK(checkpoint_step(bounded) == 3);
    CHECK(contains(b.err, "done: 3 steps; "));
}

TEST_CASE("the latent walks: fixed ends for a seed, a straight line between them") {
    const Var ends = gan::walk_ends(10, 5);
    REQUIRE(ends.value().shape() == Shape{2 * gan::kWalks, 10});
    CHECK(identical({ends.value()}, {gan::walk_ends(10, 5).value()}));
    CHECK_FALSE(identical({ends.value()}, {gan::walk_ends(10, 6).value()}));
    const Var walks = gan::latent_walks(ends);
    REQUIRE(walks.value().shape() == Shape{gan::kWalks * gan::kWalkSteps, 10});
    const Tensor &z = ends.value(), &w = walks.value();
    for (std::size_t walk = 0; walk < gan::kWalks; ++walk) {
        const std::size_t first = walk * gan::kWalkSteps, last = first + gan::kWalkSteps - 1;
        for (std::size_t i = 0; i < 10; ++i) {
            CHECK(w(first, i) == z(walk, i));
            CHECK(w(last, i) == z(gan::kWalks + walk, i));
            const float third = z(walk, i) + (z(gan::kWalks + walk, i) - z(walk, i)) * 3.f / 9.f;
            CHECK(w(first + 3, i) == doctest::Approx(third).epsilon(1e-5));
        }
    }
}

TEST_CASE("interpolation.png: a row per walk, its first and last images the generator's images of the ends") {
    test::TempDir dir;
    test::write_random_split(dir.path(), "train", 30);
    const fs::path out = dir.path() / "out", exported = dir.path() / "exported";
    REQUIRE(run(with(small_run(dir.path(), out, 2), {"--seed", "5", "--grid-scale", "2", "--export", exported.string()})) == 0);
    const test::Png png = test::read_png((out / "interpolation.png").string());
    constexpr int kScale = 2, kTile = 28 * kScale + 2;  // a tile and its padding
    CHECK(png.width == int(gan::kWalkSteps) * kTile + 2);
    REQUIRE(png.height == int(gan::kWalks) * kTile + 2);
    REQUIRE(png.channels == 1);

    // The exported generator (the mlp preset's averaged one) draws the ends.
    GanConfig config = gan::mlp_preset();
    config.hidden = 16;
    config.z_dim = 10;
    Gan g(config, 0);
    load_safetensors(g.sampling_generator(false), (exported / "generator.safetensors").string());
    const Tensor ends = g.generate(gan::walk_ends(10, 5)).value();
    int mismatched = 0;
    for (int walk = 0; walk < int(gan::kWalks); ++walk) {
        for (int pixel = 0; pixel < 784; ++pixel) {
            const int top = 2 + walk * kTile + pixel / 28 * kScale, left = 2 + pixel % 28 * kScale;
            const int right = left + int(gan::kWalkSteps - 1) * kTile;
            mismatched += *png.at(left, top) != pixel_byte(ends(walk, pixel));
            mismatched += *png.at(right + 1, top + 1) != pixel_byte(ends(gan::kWalks + walk, pixel));
        }
    }
    CHECK(mismatched == 0);
}

// ---- the conditional GAN (cdcgan) -----------------------------------------------------

namespace {

// GaussianData whose samples have classes: class c's mean is c / 10.
class LabelledGaussianData : public GaussianData {
public:
    explicit LabelledGaussianData(std::size_t dim) : GaussianData(dim, 0.5f, 0.2f) {}
    void sample_labelled(Tensor& batch, Tensor& classes, Rng& rng) override {
        sample(batch, rng);
        std::fill(classes.begin(), classes.end(), 0.f);
        for (std::size_t i = 0; i < batch.shape()[0]; ++i) {
            const std::size_t c = rng.below(classes.shape()[1]);
            classes(i, c) = 1.f;
            for (std::size_t j = 0; j < batch.shape()[1]; ++j) batch(i, j) += float(c) / 10.f;
        }
    }
};

GanConfig tiny_cdcgan() {
    GanConfig c = tiny_dcgan();
    c.preset = "cdcgan";
    c.classes = 3;
    return c;
}

// Noise rows of (z, one-hot) asking for `label`, z the same in every call.
Var noise_of_class(const GanConfig& c, std::size_t rows, std::size_t label) {
    Var noise(Tensor::from_shape({rows, c.noise_dim()}));
    Rng(12).fill_uniform(noise.mutable_value(), -1.f, 1.f);
    for (std::size_t r = 0; r < rows; ++r) gan::set_class(noise.mutable_value(), r, c.classes, label);
    return noise;
}

}  // namespace

TEST_CASE("set_class writes a one-hot after z, and class_of reads it back") {
    Tensor noise = Tensor::from_shape({2, 7});
    std::fill(noise.begin(), noise.end(), 0.25f);
    gan::set_class(noise, 1, 3, 2);
    CHECK(noise(1, 3) == 0.25f);  // z untouched
    CHECK(noise(1, 4) == 0.f);
    CHECK(noise(1, 5) == 0.f);
    CHECK(noise(1, 6) == 1.f);
    CHECK(gan::class_of(noise, 1, 3) == 2);
    CHECK(noise(0, 6) == 0.25f);  // other rows untouched
    CHECK_THROWS_AS(gan::set_class(noise, 0, 3, 3), std::invalid_argument);
}

TEST_CASE("cdcgan: G's samples and D's logits depend on the class asked for") {
    const GanConfig c = tiny_cdcgan();
    Gan g(c, 4);
    const Var zeros = noise_of_class(c, 4, 0), twos = noise_of_class(c, 4, 2);
    const Tensor a = g.generate(zeros).value(), b = g.generate(twos).value();
    CHECK(a.shape() == Shape{4, 64});
    CHECK_FALSE(a == b);
    CHECK(g.generate(noise_of_class(c, 4, 0)).value() == a);
    // The projection: the same images judged as class 0 and as class 2.
    CHECK_FALSE(g.discriminate(Var(a), zeros).value() == g.discriminate(Var(a), twos).value());
}

TEST_CASE("cdcgan: the D step changes only D, the G step only G, and R1's gradient matches finite differences") {
    LabelledGaussianData data(64);
    Gan g(with_r1(tiny_cdcgan(), 1.f, 1), 3);
    g.step(data);
    const auto g_params = values(g.generator().parameters()), d_params = values(g.discriminator().parameters());
    gan::StepStats stats;
    g.discriminator_step(data, stats);
    CHECK(stats.penalty > 0.f);
    CHECK(identical(values(g.generator().parameters()), g_params));
    CHECK_FALSE(identical(values(g.discriminator().parameters()), d_params));
    const auto d_after = values(g.discriminator().parameters());
    g.generator_step(stats);
    CHECK(identical(values(g.discriminator().parameters()), d_after));
    CHECK_FALSE(identical(values(g.generator().parameters()), g_params));

    // R1 of the conditional D: the gradient by the image alone, the classes fixed.
    GanConfig smooth = with_r1(tiny_cdcgan(), 2.f, 1);
    smooth.d_batch_norm = false;    // a batch-independent D for the differences
    smooth.init = Init::he_normal;  // N(0, 0.02) leaves this tiny D's penalty too small to difference
    // R1 jumps where a unit crosses LeakyReLU's kink, which one of the 256
    // units of the first layer does within most 1e-2 steps: a linear D.
    smooth.d_leaky_slope = 1.f;
    Gan conditional(smooth, 21);
    Rng rng(4);
    Var real(Tensor::from_shape({4, 64}), true), classes(Tensor::from_shape({4, 3}));
    data.sample_labelled(real.mutable_value(), classes.mutable_value(), rng);
    check_penalty_gradient(conditional, [&] { return conditional.r1_penalty(real, conditional.discriminate(real, classes)); });
}

TEST_CASE("cdcgan resumes bit-exactly, and refuses data without labels") {
    LabelledGaussianData data(64);
    const GanConfig c = tiny_cdcgan();
    Gan straight(c, 8), first_half(c, 8);
    for (int i = 0; i < 4; ++i) straight.step(data);
    for (int i = 0; i < 2; ++i) first_half.step(data);
    Archive archive;
    first_half.save(archive);
    Gan resumed(c, 999);
    resumed.load(archive);
    for (int i = 0; i < 2; ++i) resumed.step(data);
    CHECK(identical(values(resumed.generator().parameters()), values(straight.generator().parameters())));
    CHECK(identical(values(resumed.discriminator().parameters()), values(straight.discriminator().parameters())));
    GanConfig unconditional_config = tiny_dcgan();
    unconditional_config.preset = c.preset;  // the same preset's name, another shape
    Gan unconditional(unconditional_config, 1);
    CHECK_THROWS_WITH_AS(unconditional.load(archive), doctest::Contains("classes=3"), std::runtime_error);

    GaussianData unlabelled(64, 0.5f, 0.2f);
    Gan g(c, 1);
    CHECK_THROWS_WITH_AS(g.step(unlabelled), doctest::Contains("needs labelled data"), std::invalid_argument);
    GanConfig mlp = tiny_config();
    mlp.classes = 3;
    CHECK_THROWS_WITH_AS(Gan(mlp, 1), doctest::Contains("dcgan nets"), std::invalid_argument);
}

TEST_CASE("conditional walks: one per class, both ends of walk c of class c, the same z in every walk") {
    const Var ends = gan::walk_ends(5, 3, 4);
    REQUIRE(ends.value().shape() == Shape{8, 9});
    const Tensor& e = ends.value();
    for (std::size_t walk = 0; walk < 4; ++walk) {
        CHECK(gan::class_of(e, walk, 4) == walk);
        CHECK(gan::class_of(e, 4 + walk, 4) == walk);
        for (std::size_t i = 0; i < 5; ++i) {
            CHECK(e(walk, i) == e(0, i));
            CHECK(e(4 + walk, i) == e(4, i));
        }
    }
    CHECK(gan::latent_walks(ends).value().shape() == Shape{4 * gan::kWalkSteps, 9});
}

TEST_CASE("mnist_gan --preset cdcgan: a row per class, --digit's samples and their labels, bad --digit refused") {
    test::TempDir dir;
    test::write_random_split(dir.path(), "train", 30);
    const fs::path out = dir.path() / "out";
    const std::vector<std::string> args{
        "--data", dir.path().string(), "--out", out.string(),   "--preset", "cdcgan",       "--steps", "2", "--batch",
        "4",      "--channels",        "4",     "--grid-every", "0",        "--grid-scale", "1"};
    REQUIRE(run(with(args, {"--samples", "12"})) == 0);
    const test::Png grid = test::read_png((out / "grid_final.png").string());
    CHECK(grid.height == 10 * (28 + 2) + 2);  // ten classes
    CHECK(grid.width == 8 * (28 + 2) + 2);
    CHECK(test::read_png((out / "interpolation.png").string()).height == 10 * (28 + 2) + 2);
    const std::vector<std::uint8_t> cycled = read_idx_labels((out / "samples_labels.idx").string());
    CHECK(cycled == std::vector<std::uint8_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1});
    CHECK(read_idx_images((out / "samples.idx").string()).count == 12);

    REQUIRE(run(with(args, {"--resume", "--samples", "5", "--digit", "7"})) == 0);
    CHECK(read_idx_labels((out / "samples_labels.idx").string()) == std::vector<std::uint8_t>(5, 7));

    CHECK(run(with(args, {"--samples", "5", "--digit", "10"})) != 0);
    test::TempDir other;
    const std::vector<std::string> dcgan{
        "--data", dir.path().string(), "--out", other.path().string(), "--preset", "dcgan", "--steps", "1", "--samples",
        "5",      "--digit",           "3"};
    const Outcome refused = run_capturing(dcgan);
    CHECK(refused.code != 0);
    CHECK(contains(refused.err, "--digit 3: the dcgan preset is not conditional"));
}
