// Differentiable augmentation (Zhao et al. 2020, "Differentiable
// Augmentation for Data-Efficient GAN Training"): the same kind of random
// transform applied to every input of a GAN's discriminator, real and
// generated, in both phases. It is built from ops, so the generator's
// gradient flows through it, and the discriminator cannot learn the
// augmentation as a feature of real data.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <xgrad/core/random.hpp>
#include <xgrad/core/var.hpp>

namespace xgrad {

struct AugmentPolicy {
    bool translation = false;  // each image moved by up to translation_ratio of its sides, zeros moving in
    bool cutout = false;       // a square of cutout_ratio of the sides set to zero at a random place
    bool color = false;        // brightness + U(-0.5, 0.5), saturation x U(0, 2), contrast x U(0.5, 1.5)
    float translation_ratio = 0.125f;
    float cutout_ratio = 0.5f;
    // Each transform is applied to each image with this probability (the
    // augmentation strength p of ADA, Karras et al. 2020).
    float probability = 1.f;
    bool any() const { return translation || cutout || color; }
};

// "translation", "cutout", "color", comma-separated, in any combination;
// "" or "none" for none. Throws std::invalid_argument naming an unknown part.
AugmentPolicy parse_augment_policy(const std::string& text);
// The policy as parse_augment_policy reads it.
std::string augment_policy_text(const AugmentPolicy& policy);

class DiffAugment {
public:
    // Throws std::invalid_argument for a ratio outside (0, 1] or a
    // probability outside [0, 1].
    DiffAugment(const AugmentPolicy& policy, std::uint64_t seed);
    // x (N, C, H, W) transformed, each image by its own random draw; the
    // identity (x itself) when the policy has no transform.
    Var operator()(const Var& x);
    const AugmentPolicy& policy() const { return policy_; }
    void set_probability(float p);
    // The random stream: part of a checkpoint, for bit-exact resumes.
    Rng& rng() { return rng_; }
    const Rng& rng() const { return rng_; }

private:
    Var translate(const Var& x);
    Var cut_out(const Var& x);
    Var recolour(const Var& x);
    bool draw() { return policy_.probability >= 1.f || rng_.uniform(0.f, 1.f) < policy_.probability; }

    AugmentPolicy policy_;
    Rng rng_;
    std::vector<long> shifts_;  // reused: no allocation per call
};

}  // namespace xgrad
