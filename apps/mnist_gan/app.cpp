#include "app.hpp"

#include <atomic>
#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <optional>
#include <sstream>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>
#include <zlib.h>

#include <CLI/CLI.hpp>

#include <xgrad/core/parallel.hpp>
#include <xgrad/io/archive_file.hpp>
#include <xgrad/io/idx.hpp>
#include <xgrad/io/image.hpp>
#include <xgrad/io/progress.hpp>

#include "data.hpp"
#include "data_location.hpp"
#include "evaluation.hpp"
#include "gan.hpp"
#include "numbers.hpp"
#include "options.hpp"
#include "output.hpp"
#include "presets.hpp"

namespace gan {
namespace {

namespace fs = std::filesystem;
using xgrad::Tensor;
using xgrad::Var;

std::atomic<bool> interrupted{false};
extern "C" void on_interrupt(int) { interrupted = true; }

struct Options {
    common::DataLocation data;
    std::string preset_name = "default", g_loss, out = "out";
    long steps = 0;  // 0: the preset's
    std::size_t k = 1, batch = 128, z_dim = 100, hidden = 128, channels = 64, samples = 0;
    float lr = 1e-3f, r1 = 0.f;
    long r1_every = 16;
    std::uint64_t seed = 1;
    int threads = 1;
    long grid_every = 500, checkpoint_every = 1000, log_every = 50;
    std::string classifier;
    long eval_every = 0;
    bool resume = false;
    bool averaged =
        true;  // grids and samples from the averaged generator when the preset keeps one (--ema/--no-ema, else the preset's)
    bool sample_batch_stats = false;
};

using common::find_idx;

// Averages of the step statistics over one logging interval.
struct Interval {
    double d_loss = 0, g_loss = 0, d_real = 0, d_fake = 0;
    long steps = 0;
    void add(const StepStats& s) {
        d_loss += s.d_loss;
        g_loss += s.g_loss;
        d_real += s.d_real;
        d_fake += s.d_fake;
        ++steps;
    }
    // step, D loss, G loss, D(x), D(G(z)): a row of the History.
    std::vector<float> row(long step) const {
        const double n = double(steps);
        return {float(step), float(d_loss / n), float(g_loss / n), float(d_real / n), float(d_fake / n)};
    }
    // The sums of an interval that a checkpoint cuts, kept in it (the text
    // "log_interval", the sums as hexadecimal floats, exact), so that a run
    // killed and resumed logs the rows an uninterrupted run logs.
    void save(xgrad::Archive& archive) const {
        char text[160];
        std::snprintf(text, sizeof text, "%ld %a %a %a %a", steps, d_loss, g_loss, d_real, d_fake);
        archive.put_text(kName, text);
    }
    // An older checkpoint holds none: the interval then starts empty.
    void load(const xgrad::Archive& archive) {
        *this = Interval{};
        if (!archive.texts().count(kName)) return;
        const std::string& text = archive.text(kName);
        std::istringstream in(text);
        std::string sums[4];
        in >> steps >> sums[0] >> sums[1] >> sums[2] >> sums[3];
        double* into[4] = {&d_loss, &g_loss, &d_real, &d_fake};
        bool ok = !in.fail() && steps >= 0 && (in >> std::ws).eof();
        for (int i = 0; ok && i < 4; ++i) {
            char* end = nullptr;
            *into[i] = std::strtod(sums[i].c_str(), &end);
            ok = *end == '\0' && std::isfinite(*into[i]);
        }
        if (!ok)
            throw std::runtime_error("the text '" + std::string(kName) + "' is '" + text +
                                     "', expected a step count and four sums");
    }

private:
    static constexpr const char* kName = "log_interval";
};

// Logged curves, kept in the checkpoint (as the tensor `name`) so a resumed
// run plots them whole.
class History {
public:
    History(std::string name, std::size_t columns) : name_(std::move(name)), columns_(columns) {}
    void add(std::vector<float> row) { rows_.push_back(std::move(row)); }
    void save(xgrad::Archive& archive) const {
        Tensor t = Tensor::from_shape({rows_.size(), columns_});
        for (std::size_t r = 0; r < rows_.size(); ++r) {
            for (std::size_t c = 0; c < columns_; ++c) t(r, c) = rows_[r][c];
        }
        archive.put(name_, t);
    }
    void load(const xgrad::Archive& archive) {
        const Tensor& t = archive.tensor(name_);
        if (t.shape()[1] != columns_) {
            throw std::runtime_error("the checkpoint's '" + name_ + "' has " + std::to_string(t.shape()[1]) +
                                     " columns, expected " + std::to_string(columns_));
        }
        rows_.clear();
        for (std::size_t r = 0; r < t.shape()[0]; ++r) rows_.emplace_back(&t(r, 0), &t(r, 0) + columns_);
    }
    std::vector<float> column(std::size_t c) const {
        std::vector<float> out;
        for (const auto& row : rows_) out.push_back(row[c]);
        return out;
    }
    const std::vector<std::vector<float>>& rows() const { return rows_; }
    const std::string& name() const { return name_; }

private:
    std::string name_;
    std::size_t columns_;
    std::vector<std::vector<float>> rows_;
};

std::string status_text(const Interval& i) {
    const double n = std::max<long>(i.steps, 1);
    std::ostringstream s;
    s << std::fixed << std::setprecision(3) << "D " << i.d_loss / n << "  G " << i.g_loss / n << "  D(x) " << i.d_real / n
      << "  D(G(z)) " << i.d_fake / n;
    return s.str();
}

void write_grid(Gan& gan, const Var& fixed_noise, bool averaged, const std::string& path) {
    const Var images = gan.generate(fixed_noise, averaged);
    xgrad::write_image_grid(path, images.value(), 28, 28, 8);
}

void write_plots(const History& history, const std::string& out) {
    if (history.rows().empty()) return;
    xgrad::PlotOptions losses;
    losses.title = "GAN losses (dashed: log 4, D's loss at the optimum)";
    losses.x_label = "step";
    losses.x = history.column(0);
    losses.horizontal_lines = {float(std::log(4.0))};
    xgrad::write_line_plot(out + "/losses.png", {{"D loss", history.column(1)}, {"G loss", history.column(2)}}, losses);

    xgrad::PlotOptions probabilities = losses;
    probabilities.title = "Discriminator outputs (dashed: 1/2, the optimum)";
    probabilities.horizontal_lines = {0.5f};
    xgrad::write_line_plot(out + "/discriminator.png", {{"D(x)", history.column(3)}, {"D(G(z))", history.column(4)}},
                           probabilities);
}

// Streams n images of G into an IDX file a batch at a time, so that memory
// stays bounded whatever n is. Returns false when interrupted, leaving
// nothing under path or its temporary name.
bool write_samples(Gan& gan, std::size_t n, std::uint64_t seed, bool averaged, const std::string& path) {
    constexpr std::size_t kBatch = 256;
    xgrad::Rng rng(seed);
    xgrad::IdxImagesWriter out(path, n, 28, 28);
    std::vector<std::uint8_t> pixels;
    for (std::size_t done = 0; done < n;) {
        if (interrupted) return false;
        const std::size_t rows = std::min(kBatch, n - done);
        Var noise(Tensor::from_shape({rows, gan.config().z_dim}));
        rng.fill_uniform(noise.mutable_value(), -1.f, 1.f);
        const Var images = gan.generate(noise, averaged);
        pixels.clear();
        for (float x : images.value()) pixels.push_back(xgrad::pixel_byte(x));
        out.append(pixels.data(), rows);
        done += rows;
    }
    out.commit();
    return true;
}

// Sample quality (docs/evaluation.md): classifier score, class coverage and FID of G's
// images of 1000 fixed noise vectors against held-out images (apps/quality).
// The noise comes from an Rng of its own, drawn once: evaluating never
// touches the training stream (a resumed run stays bit-exact), and
// successive rows differ only because G changed.
class QualityMonitor {
public:
    static constexpr std::size_t kSamples = 1000;
    // step, then for the raw and the averaged generator: score, coverage
    // bits, smallest and largest class share, FID.
    static constexpr std::size_t kColumns = 11;
    QualityMonitor(const std::string& classifier_path, const std::string& data_dir, std::size_t z_dim, std::uint64_t seed)
        : classifier_(quality::Classifier::load(classifier_path)),
          evaluator_(*classifier_,
                     quality::split_held_out(xgrad::read_idx_images(find_idx(data_dir, "t10k-images-idx3-ubyte"))).reference),
          noise_(Tensor::from_shape({kSamples, z_dim})) {
        xgrad::Rng(seed).fill_uniform(noise_.mutable_value(), -1.f, 1.f);
    }
    // The raw generator's metrics, then the averaged one's (NaN without one).
    std::vector<float> measure(Gan& gan, long step) {
        std::vector<float> row{float(step)};
        for (const bool averaged : {false, true}) {
            if (averaged && !gan.has_averaged_generator()) {
                row.insert(row.end(), 5, std::numeric_limits<float>::quiet_NaN());
                continue;
            }
            // Rounded to bytes as samples.idx is: for the same noise, a row then
            // equals what gan_eval reports for the written samples.
            Tensor images = gan.generate(noise_, averaged).value();
            for (float& x : images) x = float(xgrad::pixel_byte(x)) / 255.f;
            const quality::QuickMetrics m = evaluator_.evaluate(images);
            row.insert(row.end(), {float(m.score), float(m.coverage.entropy_bits), float(m.coverage.min_share),
                                   float(m.coverage.max_share), float(m.fid)});
        }
        return row;
    }

private:
    std::unique_ptr<quality::Classifier> classifier_;
    quality::SampleEvaluator evaluator_;
    Var noise_;
};

void write_quality_plots(const History& quality, const std::string& out) {
    if (quality.rows().empty()) return;
    xgrad::PlotOptions scores;
    scores.title = "Sample quality (dashed: the maxima 10 and log2 10)";
    scores.x_label = "step";
    scores.x = quality.column(0);
    scores.horizontal_lines = {10.f, float(std::log2(10.0))};
    xgrad::write_line_plot(out + "/eval.png",
                           {{"classifier score", quality.column(1)}, {"class coverage (bits)", quality.column(2)}}, scores);
    xgrad::PlotOptions fid = scores;
    fid.title = "FID against held-out images (classifier features; lower is better)";
    fid.horizontal_lines = {};
    xgrad::write_line_plot(out + "/eval_fid.png", {{"FID", quality.column(5)}}, fid);
}

const char* g_loss_name(GeneratorLoss loss) { return loss == GeneratorLoss::minimax ? "minimax" : "non-saturating"; }

// A float as text that reads back as the same float.
std::string exact(float v) {
    char text[32];
    std::snprintf(text, sizeof text, "%.9g", double(v));
    return text;
}

// The training set as a checkpoint records it: the same images under
// another path are the same data.
std::string data_fingerprint(const xgrad::IdxImages& images) {
    char crc[16];
    std::snprintf(crc, sizeof crc, "%08lx", crc32_z(0L, images.pixels.data(), images.pixels.size()));
    return std::to_string(images.count) + " images of " + std::to_string(images.rows) + " x " + std::to_string(images.cols) +
           " pixels, CRC-32 " + crc;
}

// A setting recorded in the checkpoint as the text "settings.KEY" and
// compared on --resume; `option` is how the command line sets it.
struct Setting {
    std::string key, option, value;
};

// What a resumed run must share with the run that wrote its checkpoint:
// everything that decides the updates, and the seed behind the fixed noise
// of the grids and samples. The rest of the command line is safe to change
// (README, "Checkpoints and resuming"); --threads is recorded separately,
// since changing it is allowed but ends bit-exactness.
std::vector<Setting> training_settings(const Options& o, const GanConfig& c, const std::string& data) {
    return {{"lr", "--lr", exact(c.lr)},
            {"batch", "--batch", std::to_string(c.batch)},
            {"k", "--k", std::to_string(c.k)},
            {"r1", "--r1", exact(c.r1_gamma)},
            {"r1_every", "--r1-every", std::to_string(c.r1_every)},
            {"g_loss", "--g-loss", g_loss_name(c.g_loss)},
            {"beta1", "--preset (Adam beta1)", exact(c.beta1)},
            {"beta2", "--preset (Adam beta2)", exact(c.beta2)},
            {"real_label", "--preset (real label)", exact(c.real_label)},
            {"d_leaky_slope", "--preset (LeakyReLU slope)", exact(c.d_leaky_slope)},
            {"seed", "--seed", std::to_string(o.seed)},
            {"data", "--data (training images)", data}};
}

// What the ranks of a data-parallel run must share (docs/distributed.md):
// everything that decides the updates, and everything that decides when
// they meet in a collective (the statistics average before grids,
// evaluations and checkpoints; the run length). Ranks that differ would
// wait for each other forever or pair collectives of different sizes.
std::vector<std::pair<std::string, std::string>> rank_settings(const Options& o, const GanConfig& c, const std::string& data) {
    const bool mlp = c.architecture == Architecture::mlp;
    std::vector<std::pair<std::string, std::string>> out{
        {"--preset", c.preset},
        {"--z-dim", std::to_string(c.z_dim)},
        {mlp ? "--hidden" : "--channels", std::to_string(mlp ? c.hidden : c.channels)},
    };
    for (const Setting& s : training_settings(o, c, data)) out.emplace_back(s.option, s.value);
    const auto given = [](bool yes) { return std::string(yes ? "given" : "not given"); };
    out.insert(out.end(), {{"--steps", std::to_string(o.steps)},
                           {"--grid-every", std::to_string(o.grid_every)},
                           {"--checkpoint-every", std::to_string(o.checkpoint_every)},
                           {"--classifier", given(!o.classifier.empty())},
                           {"--eval-every", std::to_string(o.classifier.empty() ? 0 : o.eval_every)},
                           {"--resume", given(o.resume)}});
    return out;
}

// What a checkpoint holds besides the GAN, and where it goes.
struct RunState {
    Gan& gan;
    DataSource& data;
    History& history;
    History& quality;
    const Interval& interval;  // the log interval the checkpoint cuts
    std::vector<Setting> settings;
    int threads, ranks;
    std::string path;
};

// Thrown instead of saving a state with a non-finite value: every run
// resumed from such a checkpoint would continue from garbage.
struct Diverged : std::runtime_error {
    using std::runtime_error::runtime_error;
};

void check_finite(const xgrad::Archive& archive) {
    for (const auto& [name, t] : archive.tensors()) {
        const float* values = t.data();
        for (std::size_t i = 0; i < t.size(); ++i) {
            if (!std::isfinite(values[i])) {
                std::ostringstream what;
                what << "'" << name << "' holds " << values[i] << " at element " << i;
                throw Diverged(what.str());
            }
        }
    }
}

// `quality` only when it holds rows: checkpoints of runs without --classifier stay as they were.
void save_checkpoint(const RunState& run) {
    xgrad::Archive archive;
    run.gan.save(archive);
    check_finite(archive);  // the parameters and optimizer moments, which a resumed run trains on
    run.data.save(archive, "data.");
    run.history.save(archive);
    run.interval.save(archive);
    if (!run.quality.rows().empty()) run.quality.save(archive);
    for (const Setting& s : run.settings) archive.put_text("settings." + s.key, s.value);
    archive.put_text("settings.threads", std::to_string(run.threads));
    archive.put_text("settings.ranks", std::to_string(run.ranks));
    xgrad::write_archive(run.path, archive);
}

// Saves; for a state that must not be saved, says why (the last good
// checkpoint then stays).
std::optional<std::string> try_save_checkpoint(const RunState& run) {
    try {
        save_checkpoint(run);
        return std::nullopt;
    } catch (const Diverged& e) {
        return std::string(e.what());
    }
}

// The most steps a run can take (--steps).
constexpr long kMostSteps = 100000000;

bool ends_with(const std::string& text, const std::string& end) {
    return text.size() >= end.size() && text.compare(text.size() - end.size(), end.size(), end) == 0;
}

// A valid CRC says that the file holds what was written, not that it can be
// trained on: a NaN, a negative variance or a step count no run reaches
// would resume into a run that stops as diverged (and calls this checkpoint
// the last good one). Checks the state that training reads, after `gan`
// loaded the archive.
void check_checkpoint_values(const xgrad::Archive& archive, const Gan& gan) {
    for (const auto& [name, t] : archive.tensors()) {
        if (name == "history" || name == "quality") continue;  // logged curves: NaN marks a column a run did not measure
        const char* never_negative = ends_with(name, ".running_var")                   ? "a variance"
                                     : name.find("_optimizer.v.") != std::string::npos ? "Adam's second moment"
                                                                                       : nullptr;
        const float* values = t.data();
        for (std::size_t i = 0; i < t.size(); ++i) {
            if (std::isfinite(values[i]) && !(never_negative && values[i] < 0.f)) continue;
            std::ostringstream what;
            what << "entry '" << name << "' holds " << values[i] << " at element " << i;
            if (std::isfinite(values[i])) what << ", but " << never_negative << " is never negative";
            throw std::runtime_error(what.str());
        }
    }
    const long steps = gan.steps_done();
    if (steps > kMostSteps) {
        throw std::runtime_error("the text 'steps' is " + std::to_string(steps) + ", past the " + std::to_string(kMostSteps) +
                                 " steps a run can take");
    }
    // Every step updates G's optimizer and averaged weights once, D's k
    // times: the checkpoint's own k (a changed --k is refused later, naming it).
    const auto* k_text = archive.texts().count("settings.k") ? &archive.text("settings.k") : nullptr;
    const std::optional<std::uint64_t> k = k_text ? common::parse_unsigned(*k_text) : std::nullopt;
    const std::pair<const char*, long> counts[] = {{"g_optimizer.t", steps},
                                                   {"d_optimizer.t", k && *k <= 100 ? steps * static_cast<long>(*k) : -1},
                                                   {"generator_average.updates", steps}};
    for (const auto& [name, expected] : counts) {
        // SGD keeps no step count, not every preset averages G, and an older checkpoint records no k.
        if (!archive.texts().count(name) || expected < 0) continue;
        const long count = archive.integer(name);
        if (count != expected) {
            throw std::runtime_error("the text '" + std::string(name) + "' is " + std::to_string(count) +
                                     ", but a checkpoint at step " + std::to_string(steps) + " has " + std::to_string(expected));
        }
    }
}

// The checkpoint at `path` loaded as --resume does; every failure names the file.
// `data` and `interval` (may be null) take their sampler position and log interval back.
xgrad::Archive load_checkpoint(const std::string& path, Gan& gan, DataSource* data, History& history, History& quality,
                               Interval* interval) {
    xgrad::Archive archive = xgrad::read_archive(path);
    if (!archive.texts().count("architecture")) {
        throw std::runtime_error(
            "'" + path + "' is not an mnist_gan checkpoint: it has no 'architecture' text" +
            (archive.contains("classifier.architecture") ? " (it holds a classifier written by mnist_classifier)" : ""));
    }
    try {
        gan.load(archive);
        check_checkpoint_values(archive, gan);
        if (data) data->load(archive, "data.");
        history.load(archive);
        if (interval) interval->load(archive);
        if (archive.contains(quality.name())) quality.load(archive);
    } catch (const std::exception& e) {
        throw std::runtime_error("'" + path + "': " + e.what());
    }
    return archive;
}

const std::string* text_or_null(const xgrad::Archive& archive, const std::string& name) {
    const auto found = archive.texts().find(name);
    return found == archive.texts().end() ? nullptr : &found->second;
}

// A resumed run continues the same training: a changed setting is refused
// with both values.
void check_resumed_settings(const xgrad::Archive& archive, const RunState& run) {
    bool recorded = false;
    for (const Setting& s : run.settings) {
        const std::string* saved = text_or_null(archive, "settings." + s.key);
        if (!saved) continue;
        recorded = true;
        if (*saved != s.value) {
            throw std::runtime_error("--resume: " + s.option + " is " + s.value + " in this run but " + *saved +
                                     " in the checkpoint '" + run.path +
                                     "'; a resumed run keeps its training settings (start a new --out to train with others)");
        }
    }
    if (!recorded) {
        std::cerr << "note: '" << run.path << "' records no training settings (an older checkpoint), so they are not checked\n";
    }
    const std::string* threads = text_or_null(archive, "settings.threads");
    if (threads && *threads != std::to_string(run.threads)) {
        std::cerr << "note: --threads " << run.threads << " differs from the checkpoint's " << *threads
                  << ": training continues, but is no longer bit-identical to an uninterrupted run\n";
    }
    // Every rank draws the whole global batch, so the random streams do not
    // depend on the rank count; only the gradients' summation order does.
    const std::string* ranks = text_or_null(archive, "settings.ranks");
    const std::string saved_ranks = ranks ? *ranks : "1";
    if (saved_ranks != std::to_string(run.ranks)) {
        std::cerr
            << "note: the checkpoint was written by " << saved_ranks << " ranks, this run has " << run.ranks
            << ": training continues with the same batches and noise, but is no longer bit-identical to an uninterrupted run\n";
    }
}

// One CSV row: the step, then the row's values after its first (the step as a float).
std::string csv_row(long step, const std::vector<float>& row) {
    std::ostringstream s;
    s << step;
    for (std::size_t c = 1; c < row.size(); ++c) s << "," << row[c];
    s << "\n";
    return s.str();
}

// log.csv and eval.csv start over from the rows of the checkpoint, so that
// after a resume they hold none logged after it (a run killed between a
// log row and the next checkpoint would repeat those rows).
std::unique_ptr<common::TextFile> open_csv(const std::string& path, const std::string& header, const History& rows) {
    auto file = std::make_unique<common::TextFile>(path, common::TextFile::Mode::truncate);
    std::string text = header + "\n";
    for (const auto& row : rows.rows()) text += csv_row(long(row[0]), row);
    file->write(text);
    return file;
}

// The files this program writes into --out (not what else may be there).
bool is_output_name(const std::string& name) {
    static const char* const kFixed[] = {"checkpoint.xgrad", "log.csv",           "eval.csv", "samples.idx", "grid_final.png",
                                         "losses.png",       "discriminator.png", "eval.png", "eval_fid.png"};
    for (const char* fixed : kFixed) {
        if (name == fixed) return true;
    }
    return name.size() > 9 && name.compare(0, 5, "grid_") == 0 && name.compare(name.size() - 4, 4, ".png") == 0;
}

// --out, held for one run. The lock keeps a second mnist_gan out of it (both
// would write the same checkpoint); holding it, the temporary files of our
// outputs can only be left over from a killed run, and are removed.
class OutputDirectory {
public:
    explicit OutputDirectory(const std::string& dir) {
        common::check_writable_directory(dir, "--out");
        const std::string lock = dir + "/.mnist_gan.lock";
        fd_ = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (fd_ < 0) throw std::runtime_error("--out '" + dir + "': cannot create '" + lock + "': " + std::strerror(errno));
        if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
            const int error = errno;
            ::close(fd_);
            throw std::runtime_error("--out '" + dir + "': " +
                                     (error == EWOULDBLOCK ? "another mnist_gan is using it (it holds '" + lock + "')"
                                                           : "cannot lock '" + lock + "': " + std::strerror(error)));
        }
        for (const auto& entry : fs::directory_iterator(dir)) {
            const std::string name = entry.path().filename().string();
            const std::string suffix = ".tmp";
            if (name.size() <= suffix.size() || name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) continue;
            if (!is_output_name(name.substr(0, name.size() - suffix.size()))) continue;
            std::error_code error;
            fs::remove(entry.path(), error);
            if (error)
                throw std::runtime_error("cannot remove the stale temporary file '" + entry.path().string() +
                                         "': " + error.message());
            std::cerr << "removed " << entry.path().string() << ", left by an interrupted run\n";
        }
    }
    ~OutputDirectory() { ::close(fd_); }
    OutputDirectory(const OutputDirectory&) = delete;
    OutputDirectory& operator=(const OutputDirectory&) = delete;

private:
    int fd_ = -1;
};

// While alive on a rank other than 0, std::cerr prints nothing: rank 0
// speaks for the job. run_app prints an error after this is gone, so every
// rank's errors still reach the terminal.
class QuietUnlessRoot {
public:
    explicit QuietUnlessRoot(bool root) : saved_(root ? nullptr : std::cerr.rdbuf(nullptr)) {}
    ~QuietUnlessRoot() {
        if (!saved_) return;
        std::cerr.rdbuf(saved_);
        std::cerr.clear();
    }
    QuietUnlessRoot(const QuietUnlessRoot&) = delete;
    QuietUnlessRoot& operator=(const QuietUnlessRoot&) = delete;

private:
    std::streambuf* saved_;
};

// How often the ranks compare their parameters (a checksum, ~0.1 ms).
constexpr long kCompareRanksEvery = 100;

GanConfig config_from(const Options& o, const CLI::App& cli) {
    GanConfig c = preset(o.preset_name);
    // Explicit flags override the preset.
    if (cli.count("--k")) c.k = o.k;
    if (cli.count("--batch")) c.batch = o.batch;
    if (cli.count("--z-dim")) c.z_dim = o.z_dim;
    if (cli.count("--hidden")) c.hidden = o.hidden;
    if (cli.count("--channels")) c.channels = o.channels;
    if (cli.count("--lr")) c.lr = o.lr;
    if (cli.count("--r1")) c.r1_gamma = o.r1;
    if (cli.count("--r1-every")) c.r1_every = o.r1_every;
    if (cli.count("--g-loss")) c.g_loss = o.g_loss == "minimax" ? GeneratorLoss::minimax : GeneratorLoss::non_saturating;
    if (o.sample_batch_stats) c.sample_with_batch_stats = true;
    return c;
}

// A flag that the preset ignores would give another run than the one asked
// for, silently: it is refused, naming the flag and the preset.
void refuse_ignored_flags(const Options& o, const GanConfig& c, const CLI::App& cli, const CLI::Option& ema) {
    const std::string preset = "the " + c.preset + " preset";
    if (c.architecture == Architecture::dcgan && cli.count("--hidden")) {
        throw std::invalid_argument("--hidden " + std::to_string(o.hidden) + ": " + preset +
                                    " has no hidden fully connected layers (its widths are --channels)");
    }
    if (c.architecture == Architecture::mlp && cli.count("--channels")) {
        throw std::invalid_argument("--channels " + std::to_string(o.channels) + ": " + preset +
                                    " has no convolutions (its width is --hidden)");
    }
    if (o.sample_batch_stats && c.architecture != Architecture::dcgan) {
        throw std::invalid_argument("--sample-batch-stats: " + preset + " has no batch norm (only dcgan has)");
    }
    if (ema.count() && c.ema_decay <= 0.f) {
        throw std::invalid_argument(std::string(o.averaged ? "--ema" : "--no-ema") + ": " + preset +
                                    " keeps no averaged generator (mlp and dcgan do)");
    }
}

constexpr const char* kLogHeader = "step,d_loss,g_loss,d_real,d_fake";
constexpr const char* kEvalHeader =
    "step,classifier_score,coverage_bits,min_share,max_share,fid,"
    "averaged_classifier_score,averaged_coverage_bits,averaged_min_share,averaged_max_share,averaged_fid";

// Under mpirun every rank runs this with `distributed` (else null): all
// train, rank 0 alone prints and writes files.
int train(const Options& o, const GanConfig& config, const xgrad::Distributed* distributed) {
    const bool root = !distributed || distributed->is_root();
    const QuietUnlessRoot quiet(root);
    xgrad::set_num_threads(o.threads);
    // --out first: an unusable output directory fails before any long work.
    std::optional<OutputDirectory> out_directory;
    if (root) out_directory.emplace(o.out);
    const std::string data_dir = o.data.directory();
    xgrad::Dataset train_set =
        xgrad::load_dataset(find_idx(data_dir, "train-images-idx3-ubyte"), find_idx(data_dir, "train-labels-idx1-ubyte"));
    const std::size_t image_count = train_set.images.count;
    if (image_count == 0) throw std::runtime_error("the training set in '" + data_dir + "' holds no images");
    const std::string fingerprint = data_fingerprint(train_set.images);
    // Moved, not copied: 47 MB for a 60,000-image set. Its epochs are shuffled
    // from a stream of their own.
    ImageData data(std::move(train_set.images), o.seed ^ 0x5bd1e995u);

    const std::string checkpoint = o.out + "/checkpoint.xgrad";
    Gan gan(config, o.seed);
    const int ranks = distributed ? distributed->size() : 1;
    if (distributed) {
        // Before the first collective whose size depends on them.
        distributed->check_same_settings(rank_settings(o, config, fingerprint));
        try {
            gan.distribute(*distributed);
        } catch (const std::invalid_argument& e) {
            throw std::invalid_argument(std::string("--batch: ") + e.what());
        }
    }
    History history("history", 5), quality("quality", QualityMonitor::kColumns);
    Interval interval;
    const RunState run{gan,       data,  history,   quality, interval, training_settings(o, config, fingerprint),
                       o.threads, ranks, checkpoint};
    if (o.resume) {
        if (!fs::exists(checkpoint)) throw std::runtime_error("--resume: no checkpoint at '" + checkpoint + "'");
        check_resumed_settings(load_checkpoint(checkpoint, gan, &data, history, quality, &interval), run);
        // Every rank reads --out's checkpoint: ranks that read different
        // files would run different step counts.
        if (distributed) {
            char parameters[32];
            std::snprintf(parameters, sizeof parameters, "checksum %016llx",
                          static_cast<unsigned long long>(xgrad::checksum(gan.parameters())));
            distributed->check_same_settings({{"the resumed checkpoint's step", std::to_string(gan.steps_done())},
                                              {"the resumed checkpoint's parameters", parameters}});
        }
        if (gan.steps_done() > o.steps) {
            throw std::runtime_error("--steps " + std::to_string(o.steps) + ": the checkpoint '" + checkpoint +
                                     "' is already at step " + std::to_string(gan.steps_done()) +
                                     "; pass a larger --steps to train further");
        }
        std::cerr << "resumed from " << checkpoint << " at step " << gan.steps_done() << "\n";
        if (gan.steps_done() == o.steps)
            std::cerr << "nothing to train: --steps " << o.steps << " are done; writing the final outputs\n";
    }
    const auto log = root ? open_csv(o.out + "/log.csv", kLogHeader, history) : nullptr;

    const bool evaluating = !o.classifier.empty();
    std::unique_ptr<QualityMonitor> monitor;
    std::unique_ptr<common::TextFile> eval_log;
    if (evaluating && root) {
        monitor = std::make_unique<QualityMonitor>(o.classifier, data_dir, config.z_dim, o.seed + 3);
        eval_log = open_csv(o.out + "/eval.csv", kEvalHeader, quality);
    }
    const auto measure_quality = [&](long step) {
        std::vector<float> row = monitor->measure(gan, step);
        eval_log->write(csv_row(step, row));
        std::cerr << std::fixed << std::setprecision(3) << "step " << step << ": classifier score " << row[1] << ", coverage "
                  << row[2] << " bits (class shares " << row[3] << " to " << row[4] << "), FID " << std::setprecision(2) << row[5]
                  << "\n";
        quality.add(std::move(row));
    };

    // The same noise every time, so the grids show one z turning into a digit.
    xgrad::Rng grid_rng(o.seed ^ 0x9e3779b97f4a7c15ULL);
    Var fixed_noise(Tensor::from_shape({64, config.z_dim}));
    grid_rng.fill_uniform(fixed_noise.mutable_value(), -1.f, 1.f);

    std::cerr << "mnist_gan: " << image_count << " training images from " << data_dir << "; "
              << "preset=" << config.preset << " " << config.architecture_text() << " batch=" << config.batch << " k=" << config.k
              << " lr=" << config.lr
              << (config.objective == gan::Objective::wasserstein ? " objective=wasserstein gp_lambda=" + exact(config.gp_lambda)
                                                                  : " g_loss=" + std::string(g_loss_name(config.g_loss)))
              << (config.r1_gamma > 0.f ? " r1=" + exact(config.r1_gamma) + " every " + std::to_string(config.r1_every) : "")
              << "\n";
    if (ranks > 1)
        std::cerr << "data-parallel over " << ranks << " ranks: " << config.batch / ranks << " samples of each batch per rank\n";
    std::signal(SIGINT, on_interrupt);
    std::signal(SIGTERM, on_interrupt);

    xgrad::Progress progress(static_cast<std::size_t>(o.steps - gan.steps_done()));
    const auto diverged = [&](long step, const std::string& what) {
        progress.finish();
        std::cerr << "error: training diverged at step " << step << " (" << what << "); the last good checkpoint is kept at "
                  << checkpoint << "\n";
        return 3;
    };
    const std::vector<Var> parameters = gan.parameters();
    const long first = gan.steps_done();
    while (gan.steps_done() < o.steps) {
        const StepStats stats = gan.step(data, interrupted);
        const long step = gan.steps_done();
        if (!std::isfinite(stats.d_loss) || !std::isfinite(stats.g_loss)) {
            std::ostringstream losses;
            losses << "D loss " << stats.d_loss << ", G loss " << stats.g_loss;
            return diverged(step, losses.str());
        }
        interval.add(stats);
        progress.update(static_cast<std::size_t>(step - first), status_text(interval));
        if (step % o.log_every == 0 || step == o.steps) {
            history.add(interval.row(step));
            if (log) log->write(csv_row(step, history.rows().back()));
            interval = Interval{};
        }
        if (distributed && step % kCompareRanksEvery == 0) distributed->check_same(parameters, step);
        // gan.average_statistics() is collective: every rank calls it before rank 0 samples, evaluates or saves.
        if (o.grid_every > 0 && step % o.grid_every == 0) {
            gan.average_statistics();
            char name[64];
            std::snprintf(name, sizeof name, "/grid_%07ld.png", step);
            if (root) write_grid(gan, fixed_noise, o.averaged, o.out + name);
        }
        if (evaluating && o.eval_every > 0 && step % o.eval_every == 0) {
            gan.average_statistics();
            progress.finish();
            if (root) measure_quality(step);
        }
        if ((o.checkpoint_every > 0 && step % o.checkpoint_every == 0) || stats.stop) {
            gan.average_statistics();
            if (root) {
                if (const auto bad = try_save_checkpoint(run)) return diverged(step, *bad + " after the update");
            }
        }
        if (stats.stop) {
            progress.finish();
            std::cerr << "interrupted at step " << step << "; checkpoint written to " << checkpoint
                      << "; continue with the same command plus --resume\n";
            return 130;
        }
    }
    progress.finish();
    gan.average_statistics();
    if (!root) return 0;  // the rest is rank 0's outputs
    if (monitor && (quality.rows().empty() || long(quality.rows().back()[0]) != gan.steps_done()))
        measure_quality(gan.steps_done());
    if (const auto bad = try_save_checkpoint(run)) return diverged(gan.steps_done(), *bad + " after the update");

    // Training is saved; the rest derives from the checkpoint, so an
    // interruption from here on loses nothing that --resume cannot redo.
    const auto stopped = [&](const std::string& unwritten) {
        std::cerr << "interrupted after training (step " << gan.steps_done() << ", checkpoint written to " << checkpoint << "); "
                  << unwritten << " not written: run the same command plus --resume to write them\n";
        return 130;
    };
    if (interrupted) return stopped(o.samples > 0 ? "the final grid, plots and samples.idx" : "the final grid and plots");
    write_grid(gan, fixed_noise, o.averaged, o.out + "/grid_final.png");
    write_plots(history, o.out);
    write_quality_plots(quality, o.out);
    if (o.samples > 0) {
        const std::string samples_path = o.out + "/samples.idx";
        std::cerr << "writing " << o.samples << " samples to " << samples_path << "\n";
        if (interrupted || !write_samples(gan, o.samples, o.seed + 2, o.averaged, samples_path)) return stopped("samples.idx");
    }

    xgrad::Rng eval_rng(o.seed + 1);
    const double value = gan.value_estimate(data, 20, eval_rng);
    std::cerr << std::fixed << std::setprecision(4) << "done: " << gan.steps_done() << " steps; V(D,G) = " << value
              << " on 20 fresh batches (the game's optimum: -log 4 = " << -std::log(4.0) << ")\n"
              << "wrote " << o.out << "/grid_final.png, losses.png, discriminator.png, log.csv, checkpoint.xgrad"
              << (o.samples > 0 ? ", samples.idx" : "") << (monitor ? ", eval.csv, eval.png, eval_fid.png" : "") << "\n";
    return 0;
}

}  // namespace

long verify_checkpoint(const std::string& path, const GanConfig& config) {
    Gan gan(config, 0);
    History history("history", 5), quality("quality", QualityMonitor::kColumns);
    load_checkpoint(path, gan, nullptr, history, quality, nullptr);
    return gan.steps_done();
}

int run_app(int argc, const char* const* argv, const xgrad::Distributed* distributed) {
    CLI::App cli{"Trains the generative adversarial nets of Goodfellow et al. (2014) on MNIST with xgrad."};
    Options o;
    o.data.add_options(cli, "train-images-idx3-ubyte and train-labels-idx1-ubyte");
    cli.add_option("--preset", o.preset_name,
                   "reference: the paper's setup as specified (D/G 128 hidden, Adam 1e-3/0.9); "
                   "mlp: fully connected, 256 hidden, spectral norm and minibatch stddev in D, averaged G; "
                   "dcgan: convolutional nets with batch norm, samples from the raw G; wgan-gp: the dcgan nets in the "
                   "Wasserstein game with a gradient penalty; default: dcgan (README, Presets)")
        ->check(CLI::IsMember(preset_names()))
        ->capture_default_str();
    cli.add_option("--steps", o.steps, "Total training steps (default: the preset's; a resumed run continues up to this)")
        ->check(common::unsigned_in(1, kMostSteps));
    cli.add_option("--k", o.k, "Discriminator updates per generator update (overrides the preset)")
        ->check(common::unsigned_in(1, 100));
    cli.add_option("--batch", o.batch, "Minibatch size m (overrides the preset)")->check(common::unsigned_in(1, 65536));
    cli.add_option("--z-dim", o.z_dim, "Noise dimension (overrides the preset)")->check(common::unsigned_in(1, 65536));
    cli.add_option("--hidden", o.hidden, "Hidden units of both nets (overrides the preset)")
        ->check(common::unsigned_in(1, 65536));
    cli.add_option(
           "--channels", o.channels,
           "dcgan: channels of D's first convolution and G's last hidden layer; D's second and G's first have twice as many "
           "(overrides the preset)")
        ->check(common::unsigned_in(1, 4096));
    cli.add_option("--lr", o.lr, "Adam learning rate of both nets (overrides the preset)")->check(common::real_in(1e-7, 1.0));
    cli.add_option("--r1", o.r1,
                   "R1 gradient penalty gamma/2 E||grad_x D(x)||^2 on real samples (Mescheder et al. 2018; default: the "
                   "preset's, 0 = off)")
        ->check(common::real_in(0.0, 1e6));
    cli.add_option("--r1-every", o.r1_every, "Apply R1 lazily, every N-th D update with its loss scaled by N")
        ->check(common::unsigned_in(1, 1000000))
        ->capture_default_str();
    cli.add_option("--g-loss", o.g_loss, "non-saturating: maximise log D(G(z)); minimax: minimise log(1 - D(G(z)))")
        ->check(CLI::IsMember({"non-saturating", "minimax"}));
    cli.add_option("--seed", o.seed, "Random seed: same seed and thread count give identical results")
        ->check(common::unsigned_in(0, UINT64_MAX))
        ->capture_default_str();
    cli.add_option("--threads", o.threads,
                   "Threads for matrix products and elementwise work (results are identical for the same count)")
        ->check(common::unsigned_in(1, 256))
        ->capture_default_str();
    cli.add_option("--out", o.out, "Output directory (grids, plots, log.csv, checkpoint.xgrad)")->capture_default_str();
    cli.add_option("--grid-every", o.grid_every, "Write an 8x8 sample grid every N steps (0: only at the end)")
        ->check(common::unsigned_in(0, 100000000))
        ->capture_default_str();
    cli.add_option("--checkpoint-every", o.checkpoint_every, "Write OUT/checkpoint.xgrad every N steps (0: only at the end)")
        ->check(common::unsigned_in(0, 100000000))
        ->capture_default_str();
    cli.add_option("--log-every", o.log_every, "Append averages to OUT/log.csv every N steps")
        ->check(common::unsigned_in(1, 100000000))
        ->capture_default_str();
    cli.add_flag("--resume", o.resume, "Continue from OUT/checkpoint.xgrad (bit-exact with the same seed and threads)");
    auto* classifier =
        cli.add_option("--classifier", o.classifier,
                       "Weights from mnist_classifier: measure sample quality (classifier score, class coverage, "
                       "FID of 1000 samples against held-out t10k images) at the end, into OUT/eval.csv and eval.png")
            ->check(CLI::ExistingFile);
    cli.add_option("--eval-every", o.eval_every,
                   "With --classifier: also measure sample quality every N steps (0: only at the end)")
        ->check(common::unsigned_in(0, 100000000))
        ->needs(classifier)
        ->capture_default_str();
    auto* ema =
        cli.add_flag("--ema,!--no-ema", o.averaged,
                     "Write grids and samples.idx from the averaged generator, or the raw one (default: the preset's choice; "
                     "eval.csv always has both)");
    cli.add_flag("--sample-batch-stats", o.sample_batch_stats,
                 "Generate with each batch's own normalization statistics instead of the running ones (dcgan)");
    cli.add_option("--samples", o.samples, "After training, write N generated images to OUT/samples.idx (IDX3, bytes)")
        ->check(common::unsigned_in(0, 10000000));
    const bool several = distributed && distributed->size() > 1;
    try {
        cli.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        if (several && !distributed->is_root()) return e.get_exit_code();  // rank 0 prints the help or the error
        return cli.exit(e);
    }
    const std::string program =
        several ? "mnist_gan: rank " + std::to_string(distributed->rank()) + " of " + std::to_string(distributed->size()) + ": "
                : "mnist_gan: ";
    try {
        const GanConfig config = config_from(o, cli);
        refuse_ignored_flags(o, config, cli, *ema);
        if (o.steps == 0) o.steps = config.steps;
        if (!ema->count()) o.averaged = config.sample_averaged;
        return train(o, config, several ? distributed : nullptr);
    } catch (const xgrad::RanksDisagree&) {
        throw;  // thrown on every rank: Distributed::run prints it and ends the job in order
    } catch (const std::bad_alloc&) {
        std::cerr << program << "error: out of memory; try a smaller --batch, --hidden or --z-dim\n";
        return 1;
    } catch (const std::exception& e) {
        std::cerr << program << "error: " << e.what() << "\n";
        return 1;
    }
}

}  // namespace gan
