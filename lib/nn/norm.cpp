#include <xgrad/nn/norm.hpp>

#include <string>

namespace xgrad {

BatchNorm::BatchNorm(std::size_t channels, float momentum, float eps, bool affine) : momentum_(momentum), eps_(eps) {
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

Var BatchNorm::forward(const Var& x) {
    return batch_norm(x, weight, bias, running_mean, running_var,
                      BatchNormOptions{is_training(), momentum_, eps_, update_running_stats});
}

void BatchNorm::require_rank(const Var& x, std::size_t rank_a, std::size_t rank_b, const char* layer) const {
    if (x.dim() != rank_a && x.dim() != rank_b) {
        throw ShapeError(std::string("xgrad::") + layer + ": expected an input of rank " + std::to_string(rank_a) +
                         (rank_b != rank_a ? " or " + std::to_string(rank_b) : std::string()) + ", got " +
                         shape_string(x.shape()));
    }
}

Var BatchNorm1d::forward(const Var& x) {
    require_rank(x, 2, 3, "BatchNorm1d");
    return BatchNorm::forward(x);
}

Var BatchNorm2d::forward(const Var& x) {
    require_rank(x, 4, 4, "BatchNorm2d");
    return BatchNorm::forward(x);
}

LayerNorm::LayerNorm(const Shape& normalized_shape, float eps, bool affine) : shape_(normalized_shape), eps_(eps) {
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
