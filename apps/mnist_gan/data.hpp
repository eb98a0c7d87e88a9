// Where the GAN's real samples come from.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <xgrad/core/archive.hpp>
#include <xgrad/core/random.hpp>
#include <xgrad/io/idx.hpp>

namespace gan {

// Fills `batch` (m, data_dim) with real samples. A source with a position
// of its own (an epoch sampler) saves it with the checkpoint, so that a
// resumed run draws the same batches as an uninterrupted one.
class DataSource {
public:
    virtual ~DataSource() = default;
    virtual std::size_t dim() const = 0;
    virtual void sample(xgrad::Tensor& batch, xgrad::Rng& rng) = 0;
    // The same, with each sample's class as the one-hot row of `classes`
    // (m, number of classes). Throws std::invalid_argument for data
    // without labels, or fewer classes than its labels need.
    virtual void sample_labelled(xgrad::Tensor& batch, xgrad::Tensor& classes, xgrad::Rng& rng);
    virtual void save(xgrad::Archive&, const std::string& /*prefix*/) const {}
    virtual void load(const xgrad::Archive&, const std::string& /*prefix*/) {}
};

// Shuffled epochs, as DataSet.next_batch of TensorFlow 1's MNIST reader
// (tensorflow/contrib/learn/python/learn/datasets/mnist.py): every sample
// once per epoch, in an order decided by (seed, epoch) alone; a batch that
// runs past the end of an epoch takes the rest from the start of the next.
// The position (epoch, offset) is all the state there is.
class EpochSampler {
public:
    EpochSampler(std::size_t count, std::uint64_t seed);
    // The next m indices, into out[0..m).
    void next(std::size_t m, std::size_t* out);
    long epoch() const { return epoch_; }
    std::size_t offset() const { return offset_; }
    void save(xgrad::Archive& archive, const std::string& prefix) const;
    // Throws std::runtime_error naming the entry for a position that does not fit `count`.
    void load(const xgrad::Archive& archive, const std::string& prefix);

private:
    void shuffle();

    std::size_t count_;
    std::uint64_t seed_;
    long epoch_ = 0;
    std::size_t offset_ = 0;
    std::vector<std::size_t> order_;
};

// IDX images as [0, 1] rows, drawn in shuffled epochs, with their labels
// if given (one per image).
class ImageData : public DataSource {
public:
    // Throws std::invalid_argument for no images, or labels that are not one per image.
    ImageData(xgrad::IdxImages images, std::uint64_t seed, std::vector<std::uint8_t> labels = {});
    std::size_t dim() const override { return images_.rows * images_.cols; }
    void sample(xgrad::Tensor& batch, xgrad::Rng& rng) override;
    void sample_labelled(xgrad::Tensor& batch, xgrad::Tensor& classes, xgrad::Rng& rng) override;
    void save(xgrad::Archive& archive, const std::string& prefix) const override { sampler_.save(archive, prefix); }
    void load(const xgrad::Archive& archive, const std::string& prefix) override { sampler_.load(archive, prefix); }
    const xgrad::IdxImages& images() const { return images_; }

private:
    xgrad::IdxImages images_;
    std::vector<std::uint8_t> labels_;
    EpochSampler sampler_;
    std::vector<std::size_t> indices_;
};

}  // namespace gan
