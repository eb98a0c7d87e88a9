// The settings mnist_gan trains with (README, "Presets").
#pragma once

#include <string>
#include <vector>

#include "gan.hpp"

namespace gan {

// Exactly the paper's MNIST experiment as specified: D 784-128 ReLU-1,
// G 100-128 ReLU-784 sigmoid, N(0, 1/sqrt(fan_in/2)) weights,
// Adam(1e-3, 0.9, 0.999), k = 1, m = 128.
GanConfig reference_preset();
// Fully connected nets as good as they get here: width 256, LeakyReLU(0.2)
// in D, spectral normalisation of D's weights, a minibatch-stddev feature on
// D's hidden layer, Adam(8e-4, beta1 0.5), m = 128, an averaged generator
// (decay 0.999).
GanConfig mlp_preset();
// DCGAN on 28 x 28: G Linear(z -> 128*7*7), batch norm, ReLU, two transposed
// convolutions (k4 s2 p1) to 64 channels then 1, sigmoid; D two convolutions
// (k4 s2 p1, 64 then 128 channels, batch norm on the second), LeakyReLU(0.2),
// Linear(6272 -> 1); N(0, 0.02) weights, Adam(1.2e-3, beta1 0.5), m = 64.
GanConfig dcgan_preset();
// The dcgan preset conditioned on the class (Mirza & Osindero 2014): G
// takes z and the class's one-hot (a label embedding), D is a projection
// discriminator (Miyato & Koyama 2018). mnist_gan --digit d draws class d.
GanConfig cdcgan_preset();
// WGAN-GP (Gulrajani et al. 2017) with the paper's MNIST settings on the
// dcgan nets: the Wasserstein objective, gradient penalty lambda = 10, a
// critic without batch norm, k = 5, Adam(1e-4, beta (0.5, 0.9)).
GanConfig wgan_gp_preset();
// The preset of that name ("default" is one of the others, see presets.cpp);
// throws std::invalid_argument naming it and the choices otherwise.
GanConfig preset(const std::string& name);
std::vector<std::string> preset_names();

}  // namespace gan
