// Learning-rate schedules: the rate as a function of the step, applied to an
// optimizer with apply(optimizer, step) before its step().
#pragma once

#include <xgrad/optim/optimizer.hpp>

namespace xgrad {

class LrSchedule {
public:
    virtual ~LrSchedule() = default;
    virtual float lr_at(long step) const = 0;
    void apply(Optimizer& optimizer, long step) const { optimizer.set_lr(lr_at(step)); }
};

// base * gamma^floor(step / every).
class StepLr : public LrSchedule {
public:
    // Throws std::invalid_argument unless every >= 1.
    StepLr(float base, long every, float gamma);
    float lr_at(long step) const override;

private:
    float base_, gamma_;
    long every_;
};

// A linear warm-up from 0 over `warmup` steps, then half a cosine from base
// down to `final` at step `total` (and `final` after it).
class CosineLr : public LrSchedule {
public:
    // Throws std::invalid_argument unless 0 <= warmup < total.
    CosineLr(float base, long total, float final = 0.f, long warmup = 0);
    float lr_at(long step) const override;

private:
    float base_, final_;
    long total_, warmup_;
};

}  // namespace xgrad
