// Spectral normalisation (Miyato et al. 2018): a weight divided by its
// largest singular value sigma, estimated by power iteration, which bounds
// the layer's Lipschitz constant (a GAN discriminator's usual use).
#pragma once

#include <cstddef>

#include <xgrad/core/random.hpp>
#include <xgrad/core/var.hpp>

namespace xgrad {

// For a weight seen as a matrix W (its dimension `dim` by the product of
// the others, in order: PyTorch's weight.permute(dim, ...).reshape(n, -1),
// dim 0 for Linear and Conv2d, 1 for ConvTranspose2d, whose output channels
// are its weight's dim 1): u and v, unit vectors of those two sizes, estimate sigma =
// u^T W v. In training mode each normalize() first runs one power iteration
// v = W^T u / |W^T u|, u = W v / |W v| (no gradient: u and v are buffers,
// saved in checkpoints and never touched by optimizers). The gradient flows
// through sigma as the paper derives it: d sigma / dW = u v^T, with u and v
// held fixed.
class SpectralNorm {
public:
    // u and v drawn from N(0, 1) with `rng` and normalised. Throws
    // ShapeError for a dim of 2 or more, or not within the weight's rank.
    SpectralNorm(const Shape& weight_shape, Rng& rng, float eps = 1e-12f, std::size_t dim = 0);
    // W / sigma(W), the same shape as `weight`. A zero weight has sigma 0
    // and is returned as it is (its spectral norm is zero; the gradient
    // passes unchanged); the power iteration skips it, and a u that is zero
    // or not finite starts again from a unit vector.
    Var normalize(const Var& weight, bool training);
    // The sigma of the last normalize().
    float sigma() const { return sigma_; }
    Var u, v;

private:
    // Where W's element (r, c) is in the weight's storage.
    std::size_t offset(std::size_t r, std::size_t c) const {
        return dim_ == 0 ? r * cols_ + c : ((c / inner_) * rows_ + r) * inner_ + c % inner_;
    }

    std::size_t dim_, rows_, cols_, inner_;  // inner_: the product of the dimensions after dim 1
    float eps_;
    float sigma_ = 0.f;
};

}  // namespace xgrad
