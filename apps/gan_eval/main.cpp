// Scores generated images (e.g. mnist_gan --samples N) with every metric of
// apps/quality/metrics.hpp, beside the same metrics for real held-out digits;
// docs/evaluation.md explains the table and gives calibration values.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <sstream>

#include <CLI/CLI.hpp>

#include <unistd.h>

#include <xgrad/core/parallel.hpp>
#include <xgrad/io/idx.hpp>

#include "baselines.hpp"
#include "data_location.hpp"
#include "evaluation.hpp"
#include "options.hpp"
#include "output.hpp"
#include "program.hpp"

namespace {

using xgrad::Tensor;

struct Options : common::SharedOptions {
    common::DataLocation data;
    std::string samples, labels, baseline, classifier = "out/classifier.xgrad", label, csv;
    std::size_t count = 0;
};

struct Report {
    quality::QuickMetrics quick;
    double nn_mean = 0, nn_ratio = 0;
    quality::ParzenEstimate parzen;
};

// Every metric of one sample set. `nn_baseline` is the mean distance of real
// held-out images to their nearest training image.
Report full_report(quality::SampleEvaluator& evaluator, const Tensor& samples, const Tensor& training,
                   const quality::HeldOut& held_out, double nn_baseline) {
    Report r;
    r.quick = evaluator.evaluate(samples);
    r.nn_mean = quality::mean_of(quality::nearest_neighbour_distances(samples, training));
    r.nn_ratio = r.nn_mean / nn_baseline;
    r.parzen =
        quality::parzen_window(samples, held_out.parzen_validation, held_out.parzen_test, quality::default_parzen_sigmas());
    return r;
}

Tensor first_rows(const Tensor& t, std::size_t n) {
    Tensor out = Tensor::from_shape({n, t.shape()[1]});
    std::copy(t.data(), t.data() + n * t.shape()[1], out.data());
    return out;
}

std::string fixed(double v, int digits) {
    std::ostringstream s;
    s << std::fixed << std::setprecision(digits) << v;
    return s.str();
}

void print_table(const Report& s, const Report& real, std::size_t n, std::size_t classes) {
    struct Row {
        std::string metric, samples, real, reading;
    };
    const auto parzen = [](const quality::ParzenEstimate& p) {
        return fixed(p.mean, 1) + " +- " + fixed(p.standard_error, 1) + (p.sigma_at_grid_edge ? " (sigma at grid edge)" : "");
    };
    const std::vector<Row> rows = {
        {"classifier score (IS)", fixed(s.quick.score, 3), fixed(real.quick.score, 3),
         "higher is better; 1..." + std::to_string(classes)},
        {"class coverage (bits)", fixed(s.quick.coverage.entropy_bits, 3), fixed(real.quick.coverage.entropy_bits, 3),
         "max log2 " + std::to_string(classes) + " = " + fixed(std::log2(double(classes)), 3)},
        {"smallest class share", fixed(s.quick.coverage.min_share, 3), fixed(real.quick.coverage.min_share, 3),
         "near 0: a class is missing (mode collapse)"},
        {"largest class share", fixed(s.quick.coverage.max_share, 3), fixed(real.quick.coverage.max_share, 3),
         "far above 1/" + std::to_string(classes) + ": one class dominates"},
        {"FID (classifier features)", fixed(s.quick.fid, 2), fixed(real.quick.fid, 2),
         "lower is better; real data sets the floor"},
        {"NN distance to training set", fixed(s.nn_mean, 3), fixed(real.nn_mean, 3), "mean L2 in pixel units [0,1]"},
        {"  ratio to held-out real", fixed(s.nn_ratio, 3), fixed(real.nn_ratio, 3), "well below 1: copies training images"},
        {"Parzen log-likelihood (nats)", parzen(s.parzen), parzen(real.parzen), "indicative only; paper: 225 +- 2 for GANs"},
        {"  Parzen sigma", fixed(s.parzen.sigma, 3), fixed(real.parzen.sigma, 3), "chosen on a validation split"},
    };
    std::size_t w0 = 6, w1 = 7, w2 = 4;
    for (const Row& r : rows) {
        w0 = std::max(w0, r.metric.size());
        w1 = std::max(w1, r.samples.size());
        w2 = std::max(w2, r.real.size());
    }
    const std::string real_header = "real (" + std::to_string(n) + " held-out)";
    w2 = std::max(w2, real_header.size());
    std::cout << std::left << std::setw(int(w0)) << "metric"
              << "  " << std::setw(int(w1)) << "samples"
              << "  " << std::setw(int(w2)) << real_header << "  how to read\n";
    for (const Row& r : rows) {
        std::cout << std::left << std::setw(int(w0)) << r.metric << "  " << std::setw(int(w1)) << r.samples << "  "
                  << std::setw(int(w2)) << r.real << "  " << r.reading << "\n";
    }
}

void append_csv(common::TextFile& out, bool fresh, const std::string& label, std::size_t n, const Report& r) {
    std::ostringstream row;
    if (fresh)
        row << "label,count,classifier_score,coverage_bits,min_share,max_share,fid,nn_distance,nn_ratio,parzen_nats,parzen_se,"
               "parzen_sigma\n";
    row << label << "," << n << "," << r.quick.score << "," << r.quick.coverage.entropy_bits << "," << r.quick.coverage.min_share
        << "," << r.quick.coverage.max_share << "," << r.quick.fid << "," << r.nn_mean << "," << r.nn_ratio << ","
        << r.parzen.mean << "," << r.parzen.standard_error << "," << r.parzen.sigma << "\n";
    out.write(row.str());
}

// The images to score: a samples file, or one of the calibration baselines.
// Refuses up front what cannot fit in memory: a std::bad_alloc later would
// not say which option asked for too much.
void check_fits_memory(std::size_t images, std::size_t floats_per_image, const std::string& what) {
    const double gib = double(std::size_t(1) << 30);
    const double needed = double(images) * double(floats_per_image) * double(sizeof(float)) / gib;
    const double physical = double(::sysconf(_SC_PHYS_PAGES)) * double(::sysconf(_SC_PAGESIZE)) / gib;
    if (needed > physical) {
        throw std::runtime_error(what + ": scoring " + std::to_string(images) + " images takes " + fixed(needed, 1) +
                                 " GiB for their pixels, features and class probabilities as floats, more than the " +
                                 fixed(physical, 1) + " GiB of memory of this machine; pass a smaller --count");
    }
}

// The training images degraded in known ways (apps/quality/baselines.hpp).
Tensor degraded_training(const std::string& baseline, const xgrad::Dataset& training, std::size_t n) {
    const Tensor rows = quality::image_rows(training.images, 0, training.images.count);
    Tensor out;
    if (baseline == "blur") {
        out = quality::blurred(rows, training.images.rows, 1.0);
    } else if (baseline == "pairs") {
        out = quality::pair_averages(rows);
    } else if (baseline == "means") {
        out = quality::class_means(rows, training.labels);
    } else {
        out = quality::classes_below(rows, training.labels, 5);
    }
    return first_rows(out, std::min(n, out.shape()[0]));
}

Tensor load_samples(const Options& o, const quality::HeldOut& held_out, const xgrad::Dataset& training_set, std::size_t n,
                    std::size_t floats_per_image) {
    const xgrad::IdxImages& training = training_set.images;
    if (o.baseline == "real") return first_rows(held_out.real_samples, std::min(n, held_out.real_samples.shape()[0]));
    if (o.baseline == "train") return quality::image_rows(training, 0, std::min(n, training.count));
    if (o.baseline == "blur" || o.baseline == "pairs" || o.baseline == "means" || o.baseline == "half") {
        return degraded_training(o.baseline, training_set, n);
    }
    if (o.baseline == "noise") {
        check_fits_memory(n, floats_per_image, "--count " + std::to_string(n));
        Tensor noise = Tensor::from_shape({n, training.rows * training.cols});
        xgrad::Rng(o.seed).fill_uniform(noise, 0.f, 1.f);
        return noise;
    }
    const xgrad::IdxImages images = xgrad::read_idx_images(o.samples);
    if (images.rows != training.rows || images.cols != training.cols) {
        throw std::runtime_error("--samples '" + o.samples + "' holds " + std::to_string(images.rows) + "x" +
                                 std::to_string(images.cols) + " images; the data set's are " + std::to_string(training.rows) +
                                 "x" + std::to_string(training.cols));
    }
    check_fits_memory(std::min(n, images.count), floats_per_image, "--samples '" + o.samples + "'");
    return quality::image_rows(images, 0, std::min(n, images.count));
}

// For a conditional generator's samples and the classes they were asked to
// be (--labels): per class, the share the classifier puts in it.
void print_requested_classes(quality::Classifier& classifier, const Tensor& samples, const std::string& labels_path) {
    std::vector<std::uint8_t> requested = xgrad::read_idx_labels(labels_path);
    const std::size_t n = samples.shape()[0], classes = classifier.config().classes;
    if (requested.size() < n) {
        throw std::runtime_error("--labels '" + labels_path + "' holds " + std::to_string(requested.size()) + " labels for " +
                                 std::to_string(n) + " samples (expected one per sample)");
    }
    requested.resize(n);
    const std::vector<std::size_t> predicted = quality::predicted_labels(classifier.evaluate(samples).probabilities);
    std::vector<quality::RequestedClass> per_class;
    try {
        per_class = quality::requested_class_accuracy(predicted, requested, classes);
    } catch (const std::invalid_argument& e) {
        throw std::runtime_error("--labels '" + labels_path + "': " + e.what());
    }
    std::cout << "\nclassified as requested (--labels " << labels_path << "):\nclass  asked  share\n";
    double lowest = 1, right = 0;
    for (std::size_t c = 0; c < classes; ++c) {
        const quality::RequestedClass& r = per_class[c];
        std::cout << std::left << std::setw(5) << c << "  " << std::setw(5) << r.requested << "  "
                  << (r.requested ? fixed(r.accuracy, 4) : "-") << "\n";
        if (r.requested == 0) continue;
        lowest = std::min(lowest, r.accuracy);
        right += r.accuracy * double(r.requested);
    }
    std::cout << "all    " << std::setw(5) << n << "  " << fixed(right / double(n), 4) << "  (lowest class " << fixed(lowest, 4)
              << ")\n";
}

int run(const Options& o, bool count_given) {
    xgrad::set_num_threads(o.threads);
    const std::string dir = o.data.directory();
    // --csv is opened before the work, so that an unwritable one fails at once.
    const bool fresh_csv = !o.csv.empty() && !std::filesystem::exists(o.csv);
    std::unique_ptr<common::TextFile> csv;
    if (!o.csv.empty()) {
        try {
            csv = std::make_unique<common::TextFile>(o.csv, common::TextFile::Mode::append);
        } catch (const std::exception& e) {
            throw std::runtime_error(std::string("--csv: ") + e.what());
        }
    }
    const xgrad::Dataset training_set =
        xgrad::load_dataset(common::find_idx(dir, "train-images-idx3-ubyte"), common::find_idx(dir, "train-labels-idx1-ubyte"));
    const xgrad::IdxImages& training = training_set.images;
    const xgrad::IdxImages test = xgrad::read_idx_images(common::find_idx(dir, "t10k-images-idx3-ubyte"));
    if (training.count == 0) throw std::runtime_error("the training split of '" + dir + "' holds no images");
    if (!std::filesystem::exists(o.classifier)) {
        throw std::runtime_error("--classifier: no file '" + o.classifier + "' (train one: mnist_classifier --out DIR)");
    }
    const std::unique_ptr<quality::Classifier> classifier = quality::Classifier::load(o.classifier);
    if (classifier->config().inputs != training.rows * training.cols) {
        throw std::runtime_error("--classifier '" + o.classifier + "' takes " + std::to_string(classifier->config().inputs) +
                                 " pixels, the images of '" + dir + "' have " + std::to_string(training.rows * training.cols));
    }
    const quality::HeldOut held_out = quality::split_held_out(test);
    const std::size_t n = count_given ? o.count : held_out.real_samples.shape()[0];
    const std::size_t floats_per_image =
        training.rows * training.cols + classifier->config().hidden + classifier->config().classes;
    const Tensor samples = load_samples(o, held_out, training_set, n, floats_per_image);
    if (samples.shape()[0] < n && count_given) {
        throw std::runtime_error("--count " + std::to_string(n) + ": only " + std::to_string(samples.shape()[0]) +
                                 " images available");
    }
    if (samples.shape()[0] < 2) throw std::runtime_error("at least 2 samples are needed (for a covariance)");
    const std::size_t used = samples.shape()[0];
    const Tensor real = first_rows(held_out.real_samples, std::min(used, held_out.real_samples.shape()[0]));

    const std::string what = o.baseline.empty() ? "'" + o.samples + "'" : "baseline '" + o.baseline + "'";
    std::cout << "gan_eval: " << used << " images from " << what << "; classifier '" << o.classifier << "'"
              << (classifier->note().empty() ? "" : " (" + classifier->note() + ")") << "\n"
              << "reference: " << held_out.reference.shape()[0] << " held-out images of " << dir
              << " (the other half of the split is the 'real' column); memorisation against " << training.count
              << " training images\n";
    if (real.shape()[0] != used) {
        std::cout << "note: the real column has " << real.shape()[0] << " images, not " << used
                  << ": FID and Parzen depend on the count, so the columns are not directly comparable\n";
    }
    const Tensor train_rows = quality::image_rows(training, 0, training.count);
    quality::SampleEvaluator evaluator(*classifier, held_out.reference);
    const double nn_baseline = quality::mean_of(quality::nearest_neighbour_distances(held_out.reference, train_rows));
    const Report s = full_report(evaluator, samples, train_rows, held_out, nn_baseline);
    const Report r = full_report(evaluator, real, train_rows, held_out, nn_baseline);
    std::cout << "\n";
    print_table(s, r, real.shape()[0], classifier->config().classes);
    if (!o.labels.empty()) print_requested_classes(*classifier, samples, o.labels);
    if (csv) append_csv(*csv, fresh_csv, o.label.empty() ? (o.baseline.empty() ? o.samples : o.baseline) : o.label, used, s);
    common::check_stdout();
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App cli{"Sample-quality metrics of generated images, computed with the classifier of mnist_classifier."};
    Options o;
    auto* samples =
        cli.add_option("--samples", o.samples, "IDX3 image file to score (mnist_gan --samples N writes OUT/samples.idx)")
            ->check(CLI::ExistingFile);
    auto* baseline = cli.add_option("--baseline", o.baseline,
                                    "Score a calibration set instead: real (the held-out half not used as reference), "
                                    "noise (uniform pixels), train (training images: a perfect memoriser); and the training "
                                    "images blurred by 1 px (blur), averaged in pairs (pairs), replaced by their class means "
                                    "(means), or of classes 0-4 only (half)")
                         ->check(CLI::IsMember({"real", "noise", "train", "blur", "pairs", "means", "half"}));
    samples->excludes(baseline);
    cli.add_option("--labels", o.labels,
                   "IDX1 file of the class each sample was asked to be (mnist_gan --samples N with a conditional preset "
                   "writes OUT/samples_labels.idx): also report, per class, the share classified as requested")
        ->check(CLI::ExistingFile)
        ->needs(samples);
    cli.add_option("--classifier", o.classifier, "Classifier weights written by mnist_classifier")->capture_default_str();
    o.data.add_options(cli, "train-images-idx3-ubyte and t10k-images-idx3-ubyte");
    cli.add_option("--count", o.count, "Score the first N images (default: as many as the real column, half the held-out split)")
        ->check(common::unsigned_in(2, 10000000));
    o.add_shared_options(cli, "Seed of the noise baseline");
    cli.add_option("--label", o.label, "Row label for --csv (default: the samples path or baseline name)");
    cli.add_option("--csv", o.csv, "Append the samples' metrics as one row to this CSV file");
    if (const auto code = common::parse(cli, argc, argv)) return *code;
    if (o.samples.empty() && o.baseline.empty()) return cli.exit(CLI::RequiredError("--samples or --baseline"));
    return common::run_reporting_errors("gan_eval", "try a smaller --count", [&] { return run(o, cli.count("--count") > 0); });
}
