#include <xgrad/optim/schedule.hpp>

#include <cmath>
#include <stdexcept>
#include <string>

namespace xgrad {

StepLr::StepLr(float base, long every, float gamma) : base_(base), gamma_(gamma), every_(every) {
    if (every < 1) throw std::invalid_argument("xgrad::StepLr: every " + std::to_string(every) + " steps (expected >= 1)");
}

float StepLr::lr_at(long step) const {
    const long decays = std::max(step, 0L) / every_;  // whole periods: integer division on purpose
    return static_cast<float>(double(base_) * std::pow(double(gamma_), double(decays)));
}

CosineLr::CosineLr(float base, long total, float final, long warmup)
    : base_(base), final_(final), total_(total), warmup_(warmup) {
    if (warmup < 0 || warmup >= total) {
        throw std::invalid_argument("xgrad::CosineLr: warm-up of " + std::to_string(warmup) + " steps in a schedule of " +
                                    std::to_string(total) + " (expected 0 <= warmup < total)");
    }
}

float CosineLr::lr_at(long step) const {
    if (step < warmup_) return static_cast<float>(double(base_) * double(step) / double(warmup_));
    if (step >= total_) return final_;
    const double progress = double(step - warmup_) / double(total_ - warmup_);
    return static_cast<float>(final_ + 0.5 * (double(base_) - final_) * (1.0 + std::cos(3.14159265358979323846 * progress)));
}

}  // namespace xgrad
