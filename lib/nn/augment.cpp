#include <xgrad/nn/augment.hpp>

#include <algorithm>
#include <cmath>
#include <sstream>
#include <stdexcept>

#include <xgrad/core/op.hpp>
#include <xgrad/ops/arithmetic.hpp>
#include <xgrad/ops/augment.hpp>
#include <xgrad/ops/reduce.hpp>

namespace xgrad {

AugmentPolicy parse_augment_policy(const std::string& text) {
    AugmentPolicy p;
    if (text.empty() || text == "none") return p;
    std::stringstream parts(text);
    std::string part;
    while (std::getline(parts, part, ',')) {
        if (part == "translation") {
            p.translation = true;
        } else if (part == "cutout") {
            p.cutout = true;
        } else if (part == "color") {
            p.color = true;
        } else {
            std::string message = "augmentation policy '" + text + "': unknown part '";
            message += part;
            message += "' (expected translation, cutout and color, comma-separated, or none)";
            throw std::invalid_argument(message);
        }
    }
    return p;
}

std::string augment_policy_text(const AugmentPolicy& p) {
    std::string text;
    for (const auto& [on, name] : {std::pair{p.translation, "translation"}, {p.cutout, "cutout"}, {p.color, "color"}}) {
        if (on) text += (text.empty() ? "" : ",") + std::string(name);
    }
    return text.empty() ? "none" : text;
}

DiffAugment::DiffAugment(const AugmentPolicy& policy, std::uint64_t seed) : policy_(policy), rng_(seed) {
    for (const auto& [ratio, name] :
         {std::pair{policy.translation_ratio, "translation_ratio"}, {policy.cutout_ratio, "cutout_ratio"}}) {
        if (!(ratio > 0.f && ratio <= 1.f)) {
            throw std::invalid_argument(std::string("xgrad::DiffAugment: ") + name + " " + std::to_string(ratio) +
                                        " (expected a ratio in (0, 1])");
        }
    }
    set_probability(policy.probability);
}

void DiffAugment::set_probability(float p) {
    if (!(p >= 0.f && p <= 1.f)) {
        throw std::invalid_argument("xgrad::DiffAugment: probability " + std::to_string(p) + " (expected one in [0, 1])");
    }
    policy_.probability = p;
}

Var DiffAugment::operator()(const Var& x) {
    if (x.dim() != 4) throw ShapeError("xgrad::DiffAugment: expected an (N, C, H, W) batch, got " + shape_string(x.shape()));
    Var y = x;
    // The order of DiffAugment's reference code: colour, translation, cutout.
    if (policy_.color) y = recolour(y);
    if (policy_.translation) y = translate(y);
    if (policy_.cutout) y = cut_out(y);
    return y;
}

// A move of up to ratio * size pixels each way per image (0 where not drawn).
Var DiffAugment::translate(const Var& x) {
    const std::size_t n = x.shape()[0];
    shifts_.resize(2 * n);
    for (std::size_t k = 0; k < 2 * n; k += 2) {
        const bool on = draw();
        for (std::size_t axis = 0; axis < 2; ++axis) {
            const long most = std::lround(double(policy_.translation_ratio) * double(x.shape()[2 + axis]));
            const long s = static_cast<long>(rng_.below(static_cast<std::uint64_t>(2 * most + 1))) - most;
            shifts_[k + axis] = on ? s : 0;
        }
    }
    return translate2d(x, shifts_);
}

// x times a constant mask of ones with a zero square per image (its centre
// anywhere in the image; the square clipped at the borders).
Var DiffAugment::cut_out(const Var& x) {
    const std::size_t n = x.shape()[0], h = x.shape()[2], w = x.shape()[3];
    const std::size_t side_h = std::size_t(std::lround(double(policy_.cutout_ratio) * double(h)));
    const std::size_t side_w = std::size_t(std::lround(double(policy_.cutout_ratio) * double(w)));
    Var mask = Var::full(Shape{n, 1, h, w}, 1.f);
    float* m = mask.mutable_value().data();
    for (std::size_t image = 0; image < n; ++image) {
        const bool on = draw();
        const long top = long(rng_.below(h)) - long(side_h / 2), left = long(rng_.below(w)) - long(side_w / 2);
        if (!on) continue;
        for (long i = std::max(top, 0L); i < std::min(top + long(side_h), long(h)); ++i) {
            for (long j = std::max(left, 0L); j < std::min(left + long(side_w), long(w)); ++j) m[(image * h + i) * w + j] = 0.f;
        }
    }
    return x * mask;
}

// brightness: + U(-0.5, 0.5); saturation: around each pixel's mean over
// the channels, x U(0, 2) (nothing to do for one channel); contrast: around
// each image's mean, x U(0.5, 1.5). One draw per image each.
Var DiffAugment::recolour(const Var& x) {
    const std::size_t n = x.shape()[0], channels = x.shape()[1];
    const auto per_image = [&](float low, float high, float neutral) {
        Var v = Var::zeros(Shape{n, 1, 1, 1});
        float* d = v.mutable_value().data();
        for (std::size_t image = 0; image < n; ++image) {
            const bool on = draw();
            const float value = rng_.uniform(low, high);
            d[image] = on ? value : neutral;
        }
        return v;
    };
    Var y = x + per_image(-0.5f, 0.5f, 0.f);
    const Var saturation = per_image(0.f, 2.f, 1.f);
    if (channels > 1) {
        const Var mean_colour = mean(y, {1}, true);
        y = (y - mean_colour) * saturation + mean_colour;
    }
    const Var mean_image = mean(y, {1, 2, 3}, true);
    return (y - mean_image) * per_image(0.5f, 1.5f, 1.f) + mean_image;
}

}  // namespace xgrad
