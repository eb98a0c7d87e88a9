#include <xgrad/nn/norm.hpp>

#include <cmath>
#include <sstream>
#include <stdexcept>
#include <string>

namespace xgrad {
namespace {

// At construction, not at the first forward pass (batch_norm and
// layer_norm check them too).
std::string number_text(float v) {
    std::ostringstream s;
    s << v;
    return s.str();
}

void check_eps(const char* layer, float eps) {
    if (!(std::isfinite(eps) && eps > 0.f)) {
        throw std::invalid_argument(std::string("xgrad::") + layer + ": eps " + number_text(eps) +
                                    " (expected a finite number > 0)");
    }
}

void check_momentum(float momentum) {
    if (!(momentum >= 0.f && momentum <= 1.f)) {
        throw std::invalid_argument("xgrad::BatchNorm: momentum " + number_text(momentum) + " (expected 0 <= momentum <= 1)");
    }
}

}  // namespace

BatchNorm::BatchNorm(std::size_t channels, float momentum, float eps, bool affine) : momentum_(momentum), eps_(eps) {
    check_momentum(momentum);
    check_eps("BatchNorm", eps);
    if (affine) {
        weight = Var(Tensor({channels}, 1.f), true);
        bias = Var(Tensor({channels}, 0.f), true);
        register_parameter("weight", weight);
        register_parameter("bias", bias);
    }
    running_mean = Var(Tensor({channels}, 0.f));
    running_var = Var(Tensor({channels}, 1.f));
    register_buffer("running_mean", running_mean);
    register_buffer("running_var", running_var);
}

Var BatchNorm::forward(const Var& x) { return normalize(x, std::nullopt); }

Var BatchNorm::forward_rectified(const Var& x, float negative_slope) { return normalize(x, negative_slope); }

Var BatchNorm::normalize(const Var& x, std::optional<float> rectifier_slope) {
    check_input(x);
    return batch_norm(x, weight, bias, running_mean, running_var,
                      BatchNormOptions{is_training(), momentum_, eps_, update_running_stats, rectifier_slope});
}

void BatchNorm::require_rank(const Var& x, std::size_t rank_a, std::size_t rank_b, const char* layer) const {
    if (x.dim() != rank_a && x.dim() != rank_b) {
        throw ShapeError(std::string("xgrad::") + layer + ": expected an input of rank " + std::to_string(rank_a) +
                         (rank_b != rank_a ? " or " + std::to_string(rank_b) : std::string()) + ", got " +
                         shape_string(x.shape()));
    }
}

void BatchNorm1d::check_input(const Var& x) const { require_rank(x, 2, 3, "BatchNorm1d"); }

void BatchNorm2d::check_input(const Var& x) const { require_rank(x, 4, 4, "BatchNorm2d"); }

void BatchNorm::set_momentum(float momentum) {
    check_momentum(momentum);
    momentum_ = momentum;
}

std::vector<BatchNorm*> batch_norms(Module& net) {
    std::vector<BatchNorm*> found;
    net.visit([&](Module& m) {
        if (auto* bn = dynamic_cast<BatchNorm*>(&m)) found.push_back(bn);
    });
    return found;
}

StatisticsFrozen::StatisticsFrozen(const std::vector<BatchNorm*>& norms) : norms_(norms) {
    for (BatchNorm* bn : norms_) {
        were_updating_.push_back(bn->update_running_stats);
        bn->update_running_stats = false;
    }
}

StatisticsFrozen::~StatisticsFrozen() {
    for (std::size_t i = 0; i < norms_.size(); ++i) norms_[i]->update_running_stats = were_updating_[i];
}

LayerNorm::LayerNorm(const Shape& normalized_shape, float eps, bool affine) : shape_(normalized_shape), eps_(eps) {
    check_eps("LayerNorm", eps);
    if (affine) {
        weight = Var(Tensor(shape_, 1.f), true);
        bias = Var(Tensor(shape_, 0.f), true);
        register_parameter("weight", weight);
        register_parameter("bias", bias);
    }
}

Var LayerNorm::forward(const Var& x) {
    if (x.dim() < shape_.size() ||
        !std::equal(shape_.begin(), shape_.end(), x.shape().end() - static_cast<std::ptrdiff_t>(shape_.size()))) {
        throw ShapeError("xgrad::LayerNorm: normalises over " + shape_string(shape_) + ", got an input " +
                         shape_string(x.shape()));
    }
    return layer_norm(x, shape_.size(), weight, bias, eps_);
}

}  // namespace xgrad
