#include "data.hpp"

#include <algorithm>
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

void DataSource::sample_labelled(xgrad::Tensor&, xgrad::Tensor&, xgrad::Rng&) {
    throw std::invalid_argument("a conditional GAN needs labelled data; this data has no labels");
}

ImageData::ImageData(xgrad::IdxImages images, std::uint64_t seed, std::vector<std::uint8_t> labels)
    : images_(std::move(images)), labels_(std::move(labels)), sampler_(images_.count, seed) {
    if (!labels_.empty() && labels_.size() != images_.count) {
        throw std::invalid_argument(std::to_string(labels_.size()) + " labels for " + std::to_string(images_.count) +
                                    " images (expected one per image)");
    }
}

void ImageData::sample(xgrad::Tensor& batch, xgrad::Rng&) {
    indices_.resize(batch.shape()[0]);
    sampler_.next(indices_.size(), indices_.data());
    xgrad::copy_images(images_, indices_.data(), indices_.size(), batch);
}

void ImageData::sample_labelled(xgrad::Tensor& batch, xgrad::Tensor& classes, xgrad::Rng& rng) {
    if (labels_.empty()) DataSource::sample_labelled(batch, classes, rng);
    sample(batch, rng);
    const std::size_t width = classes.shape()[1];
    std::fill(classes.begin(), classes.end(), 0.f);
    for (std::size_t i = 0; i < indices_.size(); ++i) {
        const std::size_t label = labels_[indices_[i]];
        if (label >= width) {
            throw std::invalid_argument("a label " + std::to_string(label) + " in a GAN of " + std::to_string(width) +
                                        " classes (expected 0 to " + std::to_string(width - 1) + ")");
        }
        classes(i, label) = 1.f;
    }
}

}  // namespace gan
