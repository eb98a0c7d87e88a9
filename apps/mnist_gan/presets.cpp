#include "presets.hpp"

#include <stdexcept>

namespace gan {

GanConfig reference_preset() {
    GanConfig c;
    c.preset = "reference";
    return c;
}

GanConfig mlp_preset() {
    GanConfig c;
    c.preset = "mlp";
    c.hidden = 256;
    // 4x the 2e-4 of DCGAN practice: in 10 minutes of 2-core training the
    // averaged G reached FID 46.6; at 2e-4 it was 141 after 20,000 steps and
    // 102 after 60,000 (docs/evaluation.md, "The learning rate").
    c.lr = 8e-4f;
    c.beta1 = 0.5f;
    c.d_leaky_slope = 0.2f;
    c.d_spectral_norm = true;
    c.d_minibatch_stddev = true;
    c.ema_decay = 0.999f;
    return c;
}

GanConfig dcgan_preset() {
    GanConfig c;
    c.preset = "dcgan";
    c.architecture = Architecture::dcgan;
    c.steps = 3000;  // 5.3 min on 2 threads of the README's 2-vCPU machine
    c.channels = 64;
    c.batch = 64;
    // 6x the DCGAN paper's 2e-4: after 10 minutes of 2-core training the
    // FID of 10,000 samples was 53.3 at 4e-4, 43.4 at 8e-4 and 37.1 at
    // 1.2e-3 (docs/evaluation.md, "The learning rate").
    c.lr = 1.2e-3f;
    c.beta1 = 0.5f;
    c.d_leaky_slope = 0.2f;
    c.init = xgrad::Init::normal_002;
    c.ema_decay = 0.999f;
    c.sample_averaged = false;  // the raw generator measured better at every step (README, Presets)
    // R1 on real digits, lazily every 16 D updates (docs/evaluation.md, "R1").
    c.r1_gamma = 0.1f;
    return c;
}

GanConfig wgan_gp_preset() {
    GanConfig c = dcgan_preset();
    c.preset = "wgan-gp";
    // Gulrajani et al. 2017, MNIST: a critic without batch norm, lambda 10,
    // 5 critic updates per G update, Adam(1e-4, 0.5, 0.9); here on the
    // dcgan preset's nets.
    c.objective = Objective::wasserstein;
    c.gp_lambda = 10.f;
    c.r1_gamma = 0.f;  // the critic's penalty is WGAN-GP's
    c.d_batch_norm = false;
    c.k = 5;
    c.lr = 1e-4f;
    c.beta1 = 0.5f;
    c.beta2 = 0.9f;
    c.steps = 2000;
    return c;
}

std::vector<std::string> preset_names() { return {"default", "reference", "mlp", "dcgan", "wgan-gp"}; }

GanConfig preset(const std::string& name) {
    if (name == "reference") return reference_preset();
    if (name == "mlp") return mlp_preset();
    if (name == "dcgan" || name == "default") return dcgan_preset();
    if (name == "wgan-gp") return wgan_gp_preset();
    throw std::invalid_argument("unknown preset '" + name + "' (expected default, reference, mlp, dcgan or wgan-gp)");
}

}  // namespace gan
