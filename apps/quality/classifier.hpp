// The MNIST classifier behind the sample-quality metrics: an MLP trained by
// apps/mnist_classifier, whose class probabilities give the classifier score
// and class coverage, and whose last hidden layer gives the features of the
// Fréchet distance (metrics.hpp).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <xgrad/core/random.hpp>
#include <xgrad/nn.hpp>

namespace quality {

enum class ClassifierArch { mlp, cnn };

struct ClassifierConfig {
    ClassifierArch arch = ClassifierArch::mlp;
    std::size_t inputs = 784;            // cnn: side x side images
    std::size_t hidden = 512;            // units of every fully connected hidden layer (= the feature dimension)
    std::size_t hidden_layers = 2;       // mlp: how many; cnn: one, after the convolutions
    std::size_t conv1 = 32, conv2 = 64;  // cnn: channels of its two 5x5 convolutions
    std::size_t classes = 10;
    float dropout = 0.3f;  // after every fully connected hidden ReLU, while training

    // The shape-defining fields as text ("inputs=784 hidden=256 hidden_layers=2
    // classes=10", or "arch=cnn inputs=784 conv1=32 conv2=64 hidden=256
    // classes=10"): stored in the weights file, parsed back by load().
    std::string architecture() const;
};

// mlp: [Linear - ReLU - Dropout] x hidden_layers, then a Linear head to
// logits. cnn (LeNet-like): [Conv 5x5 (padding 2) - ReLU - MaxPool 2] with
// conv1 then conv2 channels, Flatten, Linear - ReLU - Dropout to `hidden`
// features, then the head.
// It owns the Rng that initialises it and draws its dropout masks, so one
// seed decides a whole training run. Not copyable or movable (its Dropout
// layers refer to that Rng).
class Classifier {
public:
    Classifier(const ClassifierConfig& config, std::uint64_t seed);
    Classifier(const Classifier&) = delete;
    Classifier& operator=(const Classifier&) = delete;

    // Logits (n, classes) of images (n, inputs); records a graph in grad mode
    // and drops units in training mode.
    xgrad::Var logits(const xgrad::Var& images);

    struct Outputs {
        xgrad::Tensor probabilities;  // (n, classes): softmax of the logits
        xgrad::Tensor features;       // (n, hidden): the last hidden layer's activations
    };
    // Evaluation mode (restored afterwards), no graph, `batch` rows at a time.
    // Throws xgrad::ShapeError for images of another width.
    Outputs evaluate(const xgrad::Tensor& images, std::size_t batch = 500);

    void train(bool training);
    std::vector<xgrad::Var> parameters() const;
    const ClassifierConfig& config() const { return config_; }
    xgrad::Rng& rng() { return rng_; }

    // The architecture, the parameters and a free-form note (e.g. the test
    // accuracy) in one archive, written atomically.
    void save(const std::string& path, const std::string& note = "") const;
    // Throws std::runtime_error naming the file when it is not a classifier
    // archive of a known architecture.
    static std::unique_ptr<Classifier> load(const std::string& path);
    // The note saved with the weights ("" if none).
    const std::string& note() const { return note_; }

private:
    ClassifierConfig config_;
    xgrad::Rng rng_;
    xgrad::Sequential body_;  // up to the features
    xgrad::Linear head_;
    std::string note_;
};

// Fraction of rows whose most probable class is the label.
double accuracy(const xgrad::Tensor& probabilities, const std::vector<std::uint8_t>& labels);

}  // namespace quality
