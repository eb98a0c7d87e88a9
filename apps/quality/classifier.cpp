#include "classifier.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <sstream>
#include <stdexcept>

#include <xgrad/io/archive_file.hpp>

#include "metrics.hpp"

namespace quality {

using xgrad::Tensor;
using xgrad::Var;

std::string ClassifierConfig::architecture() const {
    std::ostringstream s;
    if (arch == ClassifierArch::cnn) {
        s << "arch=cnn inputs=" << inputs << " conv1=" << conv1 << " conv2=" << conv2 << " hidden=" << hidden
          << " classes=" << classes;
    } else {
        s << "inputs=" << inputs << " hidden=" << hidden << " hidden_layers=" << hidden_layers << " classes=" << classes;
    }
    return s.str();
}

namespace {

ClassifierConfig parse_architecture(const std::string& text, const std::string& path) {
    ClassifierConfig c;
    std::istringstream in(text);
    std::string field;
    int seen = 0;
    const auto unknown = [&] { return std::runtime_error("'" + path + "': unknown classifier architecture '" + text + "'"); };
    while (in >> field) {
        const auto eq = field.find('=');
        const std::string key = field.substr(0, eq), value_text = eq == std::string::npos ? "" : field.substr(eq + 1);
        if (key == "arch") {
            if (value_text != "cnn") throw unknown();
            c.arch = ClassifierArch::cnn;
            continue;
        }
        std::size_t* target = key == "inputs"          ? &c.inputs
                              : key == "hidden"        ? &c.hidden
                              : key == "hidden_layers" ? &c.hidden_layers
                              : key == "conv1"         ? &c.conv1
                              : key == "conv2"         ? &c.conv2
                              : key == "classes"       ? &c.classes
                                                       : nullptr;
        std::istringstream value(value_text);
        if (!target || !(value >> *target) || *target == 0) throw unknown();
        ++seen;
    }
    if (seen != (c.arch == ClassifierArch::cnn ? 5 : 4)) {
        throw std::runtime_error("'" + path + "': incomplete classifier architecture '" + text + "'");
    }
    return c;
}

// side x side images, side a multiple of 4 (two 2x2 poolings).
std::size_t image_side(const ClassifierConfig& c) {
    const auto side = static_cast<std::size_t>(std::lround(std::sqrt(double(c.inputs))));
    if (side * side != c.inputs || side % 4 != 0) {
        throw std::invalid_argument("the cnn classifier needs square images with a side divisible by 4, not " +
                                    std::to_string(c.inputs) + " inputs");
    }
    return side;
}

}  // namespace

Classifier::Classifier(const ClassifierConfig& config, std::uint64_t seed)
    : config_(config), rng_(seed), head_(config.hidden, config.classes, rng_, xgrad::Init::xavier_uniform) {
    // head_ (a member) drew its weights before these layers do: a fixed
    // order, so the seed alone still decides every weight. Its init is
    // named, not Linear's default: the FIDs of docs/evaluation.md are
    // measured with this classifier, and when Linear's default became
    // PyTorch's, the classifier it trained put the blur row's FID at 381-445
    // where it is 134-165 (docs/evaluation.md, Calibration).
    std::size_t width = config.inputs, layers = config.hidden_layers;
    if (config.arch == ClassifierArch::cnn) {
        const std::size_t side = image_side(config);
        const auto s = static_cast<long>(side);
        body_.add<xgrad::Reshape>(xgrad::ShapeSpec{-1, 1, s, s});
        body_.add<xgrad::Conv2d>(1, config.conv1, 5, rng_, xgrad::Conv2dOptions{1, 2}, xgrad::Init::he_normal);
        body_.add<xgrad::ReLU>();
        body_.add<xgrad::MaxPool2d>(2);
        body_.add<xgrad::Conv2d>(config.conv1, config.conv2, 5, rng_, xgrad::Conv2dOptions{1, 2}, xgrad::Init::he_normal);
        body_.add<xgrad::ReLU>();
        body_.add<xgrad::MaxPool2d>(2);
        body_.add<xgrad::Flatten>();
        width = config.conv2 * (side / 4) * (side / 4);
        layers = 1;
    }
    for (std::size_t i = 0; i < layers; ++i) {
        body_.add<xgrad::Linear>(width, config.hidden, rng_, xgrad::Init::he_normal);
        body_.add<xgrad::ReLU>();
        body_.add<xgrad::Dropout>(config.dropout, rng_);
        width = config.hidden;
    }
}

Var Classifier::logits(const Var& images) { return head_(body_(images)); }

void Classifier::train(bool training) {
    body_.train(training);
    head_.train(training);
}

std::vector<Var> Classifier::parameters() const {
    std::vector<Var> p = body_.parameters();
    for (const Var& v : head_.parameters()) p.push_back(v);
    return p;
}

Classifier::Outputs Classifier::evaluate(const Tensor& images, std::size_t batch) {
    const std::size_t n = images.shape()[0];
    if (images.shape()[1] != config_.inputs) {
        throw xgrad::ShapeError("quality::Classifier: images " + xgrad::shape_string(images) + " are not rows of " +
                                std::to_string(config_.inputs) + " pixels");
    }
    const bool was_training = body_.is_training();
    train(false);
    xgrad::NoGrad no_grad;
    Outputs out{Tensor::from_shape({n, config_.classes}), Tensor::from_shape({n, config_.hidden})};
    for (std::size_t first = 0; first < n; first += batch) {
        const std::size_t rows = std::min(batch, n - first);
        Tensor x = Tensor::from_shape({rows, config_.inputs});
        std::memcpy(x.data(), images.data() + first * config_.inputs, rows * config_.inputs * sizeof(float));
        const Var features = body_(Var(std::move(x)));
        const Var logits = head_(features);
        std::memcpy(out.features.data() + first * config_.hidden, features.value().data(), rows * config_.hidden * sizeof(float));
        for (std::size_t r = 0; r < rows; ++r) {
            const float* l = &logits.value()(r, 0);
            float* p = &out.probabilities(first + r, 0);
            const float m = *std::max_element(l, l + config_.classes);
            double total = 0;
            for (std::size_t c = 0; c < config_.classes; ++c) total += p[c] = std::exp(l[c] - m);
            for (std::size_t c = 0; c < config_.classes; ++c) p[c] = static_cast<float>(p[c] / total);
        }
    }
    train(was_training);
    return out;
}

void Classifier::save(const std::string& path, const std::string& note) const {
    xgrad::Archive archive;
    archive.put_text("classifier.architecture", config_.architecture());
    archive.put_text("classifier.note", note);
    body_.save(archive, "body.");
    head_.save(archive, "head.");
    xgrad::write_archive(path, archive);
}

std::unique_ptr<Classifier> Classifier::load(const std::string& path) {
    const xgrad::Archive archive = xgrad::read_archive(path);
    if (!archive.contains("classifier.architecture")) {
        throw std::runtime_error("'" + path + "' holds no classifier (write one with mnist_classifier --out)");
    }
    auto c = std::make_unique<Classifier>(parse_architecture(archive.text("classifier.architecture"), path), 0);
    try {
        c->body_.load(archive, "body.");
        c->head_.load(archive, "head.");
    } catch (const std::exception& e) {
        throw std::runtime_error("'" + path + "': " + e.what());
    }
    if (archive.contains("classifier.note")) c->note_ = archive.text("classifier.note");
    return c;
}

double accuracy(const Tensor& probabilities, const std::vector<std::uint8_t>& labels) {
    const std::vector<std::size_t> predicted = predicted_labels(probabilities);
    if (predicted.size() != labels.size() || labels.empty()) {
        throw std::invalid_argument("quality::accuracy: " + std::to_string(predicted.size()) + " predictions for " +
                                    std::to_string(labels.size()) + " labels");
    }
    std::size_t right = 0;
    for (std::size_t i = 0; i < labels.size(); ++i) right += predicted[i] == labels[i];
    return double(right) / double(labels.size());
}

}  // namespace quality
