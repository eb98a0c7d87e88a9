// Generative adversarial nets (Goodfellow et al. 2014, arXiv:1406.2661) on a
// toy problem: a generator G learns to draw points of a 2-D mixture of four
// Gaussians, against a discriminator D that tells its points from the data's.
//
// Algorithm 1 of the paper, which the training loop below follows:
//   for each training iteration:
//     for k steps (here k = 1):
//       sample m noise vectors z from the prior p_z, and m examples x from
//       the data;
//       update D by ascending its stochastic gradient of
//         1/m sum_i [log D(x_i) + log(1 - D(G(z_i)))];
//     sample m fresh noise vectors z;
//     update G by descending its stochastic gradient of
//         1/m sum_i log(1 - D(G(z_i))).
// For G this program, as the paper suggests, ascends log D(G(z)) instead
// (the "non-saturating" loss: the same fixed point, and strong gradients
// early on, when D rejects G's points easily). D outputs a logit, so each
// log-likelihood is a binary cross-entropy: -log D(x) is
// bce_with_logits(D(x), 1) and -log(1 - D(G(z))) is bce_with_logits(D(G(z)), 0).
//
// apps/mnist_gan trains the same game on MNIST digits, with convolutional
// nets, checkpoints and sample quality measures (its step: Gan::step in
// apps/mnist_gan/gan.cpp). meson test runs this program (example_gan); it
// fails unless G's points end up near the data.
#include <cmath>
#include <cstdio>

#include <xgrad.hpp>
using namespace xgrad;

namespace {

constexpr std::size_t kBatch = 64, kNoise = 8, kHidden = 64;  // m, dim z, hidden units
constexpr float kCentres[4][2] = {{2, 2}, {2, -2}, {-2, 2}, {-2, -2}};
constexpr float kSpread = 0.1f;  // each Gaussian's standard deviation

// m examples of the data: a random centre each, plus Gaussian noise.
void sample_data(Tensor& x, Rng& rng) {
    for (std::size_t i = 0; i < x.shape()[0]; ++i) {
        const float* centre = kCentres[rng.below(4)];
        x(i, 0) = centre[0] + rng.normal(0.f, kSpread);
        x(i, 1) = centre[1] + rng.normal(0.f, kSpread);
    }
}

// The mean distance from each point to the nearest centre of the mixture.
float distance_to_data(const Tensor& points) {
    double sum = 0;
    for (std::size_t i = 0; i < points.shape()[0]; ++i) {
        float nearest = INFINITY;
        for (const auto& c : kCentres) nearest = std::fmin(nearest, std::hypot(points(i, 0) - c[0], points(i, 1) - c[1]));
        sum += nearest;
    }
    return float(sum / double(points.shape()[0]));
}

float mean_probability(const Var& logits) {
    NoGrad no_grad;
    return mean(sigmoid(logits)).item();
}

}  // namespace

int main() {
    Rng rng(1);
    // G maps noise z to a point; D maps a point to the logit of "from the data".
    Sequential g, d;
    g.add<Linear>(kNoise, kHidden, rng);
    g.add<ReLU>();
    g.add<Linear>(kHidden, kHidden, rng);
    g.add<ReLU>();
    g.add<Linear>(kHidden, 2, rng);
    d.add<Linear>(2, kHidden, rng);
    d.add<LeakyReLU>(0.2f);
    d.add<Linear>(kHidden, kHidden, rng);
    d.add<LeakyReLU>(0.2f);
    d.add<Linear>(kHidden, 1, rng);
    const std::vector<Var> d_parameters = d.parameters();
    Adam g_adam(g.parameters(), AdamOptions{/*lr=*/1e-3f, /*beta1=*/0.5f});
    Adam d_adam(d_parameters, AdamOptions{/*lr=*/1e-3f, /*beta1=*/0.5f});

    // Fixed noise: G's points for it, before and after training, show what G learnt.
    Var probe(Tensor::from_shape({1000, kNoise}));
    rng.fill_normal(probe.mutable_value(), 0.f, 1.f);
    const auto g_distance = [&] {
        NoGrad no_grad;
        return distance_to_data(g(probe).value());
    };
    const float before = g_distance();

    Var real(Tensor::from_shape({kBatch, 2})), noise(Tensor::from_shape({kBatch, kNoise}));
    for (int step = 1; step <= 2000; ++step) {
        // (1) D's update. m examples x of the data, and m noise samples z.
        sample_data(real.mutable_value(), rng);
        rng.fill_normal(noise.mutable_value(), 0.f, 1.f);
        // The fake batch G(z) is made under NoGrad: a plain value with no
        // graph of G behind it, so D's backward stops there.
        Var fake;
        {
            NoGrad no_grad;
            fake = g(noise);
        }
        // D's loss is minus its objective: -log D(x) - log(1 - D(G(z))).
        const Var d_real = d(real), d_fake = d(fake);
        const Var d_loss = bce_with_logits(d_real, 1.f) + bce_with_logits(d_fake, 0.f);
        d_adam.zero_grad();
        backward(d_loss);
        d_adam.step();

        // (2) G's update, on m fresh noise samples.
        rng.fill_normal(noise.mutable_value(), 0.f, 1.f);
        {
            // D is frozen while G learns through it: backward carries the
            // gradient through D to G's parameters but computes none of
            // D's own, and D's optimizer would leave D alone.
            const FreezeGuard frozen(d_parameters);
            // G's non-saturating loss: -log D(G(z)).
            const Var g_loss = bce_with_logits(d(g(noise)), 1.f);
            g_adam.zero_grad();
            backward(g_loss);
            g_adam.step();
            if (step % 400 == 0) {
                std::printf("step %4d  D loss %.3f  G loss %.3f  D(x) %.3f  D(G(z)) %.3f\n", step, d_loss.item(), g_loss.item(),
                            mean_probability(d_real), mean_probability(d_fake));
            }
        }
    }
    const float after = g_distance();
    std::printf("mean distance from G's points to the nearest centre: %.3f before training, %.3f after\n", before, after);
    return after < 0.25f * before ? 0 : 1;  // at least 4 times closer
}
