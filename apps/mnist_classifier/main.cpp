// Trains the MLP of apps/quality/classifier.hpp on the training split, reports
// its accuracy on the held-out t10k split and saves its weights: the
// classifier that gan_eval and mnist_gan --classifier score samples with.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <sstream>

#include <CLI/CLI.hpp>

#include <xgrad/core/parallel.hpp>
#include <xgrad/io/idx.hpp>
#include <xgrad/io/progress.hpp>
#include <xgrad/ops.hpp>
#include <xgrad/optim.hpp>

#include "classifier.hpp"
#include "data_location.hpp"
#include "evaluation.hpp"
#include "options.hpp"
#include "output.hpp"
#include "program.hpp"

namespace {

using xgrad::Tensor;
using xgrad::Var;

struct Options : common::SharedOptions {
    common::DataLocation data;
    std::string out = "out";
    std::string arch = "cnn";
    // The defaults of each architecture were measured on the 8000/2000 real
    // digits of data/mnist (docs/evaluation.md); 0 means "the architecture's".
    std::size_t epochs = 0, batch = 128, hidden = 0, layers = 2, shift = 2, conv1 = 32, conv2 = 64;
    float lr = 1e-3f, dropout = 0.3f;
};

// dst = src (side x side) moved by (dx, dy) pixels, zeros shifted in: the
// cheap augmentation that makes 8000 digits behave like many more.
void shifted_copy(const float* src, float* dst, std::size_t side, long dx, long dy) {
    const long n = static_cast<long>(side);
    for (long y = 0; y < n; ++y) {
        for (long x = 0; x < n; ++x) {
            const long sy = y - dy, sx = x - dx;
            dst[y * n + x] = (sy >= 0 && sy < n && sx >= 0 && sx < n) ? src[sy * n + sx] : 0.f;
        }
    }
}

std::string percent(double fraction) {
    std::ostringstream s;
    s << std::fixed << std::setprecision(2) << 100.0 * fraction << "%";
    return s.str();
}

// The training and the held-out split of `dir`, checked: neither empty, every
// label a digit.
struct Splits {
    xgrad::Dataset train, test;
};
Splits load_splits(const std::string& dir) {
    Splits s{
        xgrad::load_dataset(common::find_idx(dir, "train-images-idx3-ubyte"), common::find_idx(dir, "train-labels-idx1-ubyte")),
        xgrad::load_dataset(common::find_idx(dir, "t10k-images-idx3-ubyte"), common::find_idx(dir, "t10k-labels-idx1-ubyte"))};
    if (s.train.images.count == 0 || s.test.images.count == 0) {
        throw std::runtime_error("'" + dir + "' has an empty training or test split");
    }
    for (const auto* labels : {&s.train.labels, &s.test.labels}) {
        for (std::uint8_t l : *labels) {
            if (l >= 10) throw std::runtime_error("'" + dir + "' has a label " + std::to_string(l) + "; expected 0-9");
        }
    }
    return s;
}

quality::ClassifierConfig configure(const Options& o, std::size_t pixels) {
    quality::ClassifierConfig config;
    const bool cnn = o.arch == "cnn";
    config.arch = cnn ? quality::ClassifierArch::cnn : quality::ClassifierArch::mlp;
    config.inputs = pixels;
    config.hidden = o.hidden ? o.hidden : cnn ? 256 : 512;
    config.hidden_layers = o.layers;
    config.conv1 = o.conv1;
    config.conv2 = o.conv2;
    config.dropout = o.dropout;
    return config;
}

// x and its one-hot targets <- the images order[first, first + batch) of
// `images` (side x side each), each moved by up to `shift` pixels.
void fill_batch(const Tensor& images, const std::vector<std::uint8_t>& labels, const std::vector<std::size_t>& order,
                std::size_t first, std::size_t side, std::size_t shift, xgrad::Rng& rng, Var& x, Var& targets) {
    Tensor& xv = x.mutable_value();
    Tensor& tv = targets.mutable_value();
    tv.fill(0.f);
    const long span = 2 * static_cast<long>(shift) + 1;
    for (std::size_t r = 0; r < xv.shape()[0]; ++r) {
        const std::size_t i = order[first + r];
        const long dx = static_cast<long>(rng.below(span)) - long(shift);
        const long dy = static_cast<long>(rng.below(span)) - long(shift);
        shifted_copy(&images(i, 0), &xv(r, 0), side, dx, dy);
        tv(r, labels[i]) = 1.f;
    }
}

struct StepResult {
    float loss;
    std::size_t right;  // rows whose largest logit is their target's class
};

// One optimiser step on the batch x with one-hot targets.
StepResult train_step(quality::Classifier& classifier, xgrad::Adam& optimizer, const Var& x, const Var& targets) {
    const Var logits = classifier.logits(x);
    const Var loss = xgrad::softmax_cross_entropy(logits, targets);
    optimizer.zero_grad();
    xgrad::backward(loss);
    optimizer.step();
    if (!std::isfinite(loss.item())) {
        throw std::runtime_error("training diverged (loss " + std::to_string(loss.item()) + "); try a smaller --lr");
    }
    StepResult result{loss.item(), 0};
    const std::size_t rows = logits.value().shape()[0], classes = logits.value().shape()[1];
    for (std::size_t r = 0; r < rows; ++r) {
        const float* l = &logits.value()(r, 0);
        const float* t = &targets.value()(r, 0);
        result.right += std::max_element(l, l + classes) - l == std::max_element(t, t + classes) - t;
    }
    return result;
}

// Writes OUT/classifier.xgrad, noting its test accuracy, and says so.
void save(const quality::Classifier& classifier, const Options& o, const std::string& dir, double test_accuracy,
          std::size_t test_count, std::size_t epochs) {
    const std::string path = o.out + "/classifier.xgrad";
    std::ostringstream note;
    note << "test accuracy " << percent(test_accuracy) << " on " << test_count << " held-out images of " << dir << "; " << epochs
         << " epochs, seed " << o.seed;
    classifier.save(path, note.str());
    std::cout << "test accuracy: " << percent(test_accuracy) << " (" << test_count << " held-out images of " << dir << ")\nwrote "
              << path << "\n";
    common::check_stdout();
}

int train(const Options& o) {
    xgrad::set_num_threads(o.threads);
    // Before the epochs: their result would be lost to an unwritable --out.
    common::check_writable_directory(o.out, "--out");
    common::remove_stale_temporary(o.out + "/classifier.xgrad");
    const std::string dir = o.data.directory();
    const Splits splits = load_splits(dir);
    const xgrad::Dataset &train_set = splits.train, &test_set = splits.test;
    const std::size_t n = train_set.images.count;
    const Tensor images = quality::image_rows(train_set.images, 0, n);
    const Tensor test_images = quality::image_rows(test_set.images, 0, test_set.images.count);
    const std::size_t side = train_set.images.rows, pixels = side * side;

    const quality::ClassifierConfig config = configure(o, pixels);
    const std::size_t epochs = o.epochs ? o.epochs : config.arch == quality::ClassifierArch::cnn ? 30 : 50;
    quality::Classifier classifier(config, o.seed);
    xgrad::Adam optimizer(classifier.parameters(), xgrad::AdamOptions{o.lr});
    xgrad::Rng& rng = classifier.rng();

    // Only whole batches: every step then reuses the same buffers. Shuffling
    // each epoch lets the images left over take part in other epochs.
    const std::size_t batch = std::min(o.batch, n), steps_per_epoch = n / batch;
    // Cosine decay to 0: the last epochs settle into a minimum instead of
    // hopping around it (the final accuracy varies less).
    const xgrad::CosineLr schedule(o.lr, static_cast<long>(epochs * steps_per_epoch));
    Var x(Tensor({batch, pixels}, 0.f)), targets(Tensor({batch, config.classes}, 0.f));
    std::vector<std::size_t> order(n);
    for (std::size_t i = 0; i < n; ++i) order[i] = i;

    std::cerr << "mnist_classifier: " << n << " training and " << test_set.images.count << " test images from " << dir << "; "
              << config.architecture() << " dropout=" << config.dropout << " shift=" << o.shift << " batch=" << batch
              << " lr=" << o.lr << " epochs=" << epochs << "\n";
    xgrad::Progress progress(epochs * steps_per_epoch);
    double test_accuracy = 0;
    for (std::size_t epoch = 1; epoch <= epochs; ++epoch) {
        for (std::size_t i = n; i > 1; --i) std::swap(order[i - 1], order[rng.below(i)]);
        double loss_sum = 0;
        std::size_t right = 0;
        classifier.train(true);
        for (std::size_t step = 0; step < steps_per_epoch; ++step) {
            fill_batch(images, train_set.labels, order, step * batch, side, o.shift, rng, x, targets);
            schedule.apply(optimizer, static_cast<long>((epoch - 1) * steps_per_epoch + step));
            const StepResult result = train_step(classifier, optimizer, x, targets);
            loss_sum += result.loss;
            right += result.right;
            std::ostringstream status;
            status << "epoch " << epoch << "/" << epochs << "  loss " << std::fixed << std::setprecision(4)
                   << loss_sum / double(step + 1);
            progress.update((epoch - 1) * steps_per_epoch + step + 1, status.str());
        }
        test_accuracy = quality::accuracy(classifier.evaluate(test_images).probabilities, test_set.labels);
        progress.finish();
        std::cerr << "epoch " << epoch << "/" << epochs << ": loss " << std::fixed << std::setprecision(4)
                  << loss_sum / double(steps_per_epoch) << ", training accuracy (augmented, dropout) "
                  << percent(double(right) / double(steps_per_epoch * batch)) << ", test accuracy " << percent(test_accuracy)
                  << "\n";
    }

    save(classifier, o, dir, test_accuracy, test_set.images.count, epochs);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App cli{
        "Trains a classifier (a small CNN, or an MLP) on MNIST with xgrad; gan_eval and mnist_gan --classifier use it to score "
        "samples."};
    Options o;
    o.data.add_options(cli, "{train,t10k}-{images-idx3,labels-idx1}-ubyte");
    cli.add_option("--arch", o.arch, "cnn: conv-pool-conv-pool-fc (LeNet-like); mlp: fully connected")
        ->check(CLI::IsMember({"cnn", "mlp"}))
        ->capture_default_str();
    cli.add_option("--epochs", o.epochs, "Passes over the training split (default: 30 for cnn, 50 for mlp)")
        ->check(common::unsigned_in(1, 100000));
    cli.add_option("--batch", o.batch, "Minibatch size")->check(common::unsigned_in(1, 65536))->capture_default_str();
    cli.add_option("--lr", o.lr, "Adam learning rate")->check(common::real_in(1e-7, 1.0))->capture_default_str();
    cli.add_option(
           "--hidden", o.hidden,
           "Units of each fully connected hidden layer (= the feature dimension of the FID; default: 256 for cnn, 512 for mlp)")
        ->check(common::unsigned_in(1, 65536));
    cli.add_option("--layers", o.layers, "mlp: hidden layers")->check(common::unsigned_in(1, 16))->capture_default_str();
    cli.add_option("--conv1", o.conv1, "cnn: channels of the first 5x5 convolution")
        ->check(common::unsigned_in(1, 4096))
        ->capture_default_str();
    cli.add_option("--conv2", o.conv2, "cnn: channels of the second 5x5 convolution")
        ->check(common::unsigned_in(1, 4096))
        ->capture_default_str();
    cli.add_option("--dropout", o.dropout, "Drop probability after each hidden layer while training")
        ->check(common::real_in(0.0, 0.95))
        ->capture_default_str();
    cli.add_option("--shift", o.shift, "Augmentation: shift each training image by up to N pixels in x and y (0: off)")
        ->check(common::unsigned_in(0, 10))
        ->capture_default_str();
    o.add_shared_options(cli, "Random seed: same seed and thread count give identical weights");
    cli.add_option("--out", o.out, "Output directory; the weights go to OUT/classifier.xgrad")->capture_default_str();
    if (const auto code = common::parse(cli, argc, argv)) return *code;
    return common::run_reporting_errors("mnist_classifier", "try a smaller --batch or --hidden", [&] { return train(o); });
}
