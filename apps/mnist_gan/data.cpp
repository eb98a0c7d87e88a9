#include "data.hpp"

#include <numeric>
#include <stdexcept>

namespace gan {

EpochSampler::EpochSampler(std::size_t count, std::uint64_t seed) : count_(count), seed_(seed), order_(count) {
    if (count == 0) throw std::invalid_argument("EpochSampler: no samples to draw from");
    shuffle();
}

void EpochSampler::shuffle() {
    std::iota(order_.begin(), order_.end(), std::size_t{0});
    // A stream of its own per epoch: the order depends on (seed, epoch) only,
    // never on how many draws the training stream made.
    xgrad::Rng rng(seed_ ^ (0x9e3779b97f4a7c15ULL * std::uint64_t(epoch_ + 1)));
    for (std::size_t i = count_; i > 1; --i) std::swap(order_[i - 1], order_[rng.below(i)]);
}

void EpochSampler::next(std::size_t m, std::size_t* out) {
    for (std::size_t i = 0; i < m; ++i) {
        if (offset_ == count_) {
            ++epoch_;
            offset_ = 0;
            shuffle();
        }
        out[i] = order_[offset_++];
    }
}

void EpochSampler::save(xgrad::Archive& archive, const std::string& prefix) const {
    archive.put_integer(prefix + "epoch", epoch_);
    archive.put_integer(prefix + "offset", static_cast<long>(offset_));
}

void EpochSampler::load(const xgrad::Archive& archive, const std::string& prefix) {
    const long epoch = archive.integer(prefix + "epoch");
    const long offset = archive.integer(prefix + "offset");
    if (static_cast<std::size_t>(offset) > count_) {
        throw std::runtime_error("entry '" + prefix + "offset' is " + std::to_string(offset) + ", past the " +
                                 std::to_string(count_) + " samples of an epoch");
    }
    epoch_ = epoch;
    offset_ = static_cast<std::size_t>(offset);
    shuffle();
}

ImageData::ImageData(xgrad::IdxImages images, std::uint64_t seed) : images_(std::move(images)), sampler_(images_.count, seed) {}

void ImageData::sample(xgrad::Tensor& batch, xgrad::Rng&) {
    indices_.resize(batch.shape()[0]);
    sampler_.next(indices_.size(), indices_.data());
    xgrad::copy_images(images_, indices_.data(), indices_.size(), batch);
}

}  // namespace gan
