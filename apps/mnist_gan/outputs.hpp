// What mnist_gan writes into --out and prints: the logged curves (log.csv,
// eval.csv and their plots), sample grids and samples.idx, the progress
// line's text; the lock on --out, and rank 0 speaking for the job.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <streambuf>
#include <string>
#include <vector>

#include <xgrad/core/archive.hpp>

#include "gan.hpp"
#include "output.hpp"

namespace gan {

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
    void save(xgrad::Archive& archive) const;
    // An older checkpoint holds none: the interval then starts empty.
    void load(const xgrad::Archive& archive);
};

// Logged curves, kept in the checkpoint (as the tensor `name`) so a resumed
// run plots them whole.
class History {
public:
    History(std::string name, std::size_t columns) : name_(std::move(name)), columns_(columns) {}
    void add(std::vector<float> row) { rows_.push_back(std::move(row)); }
    void save(xgrad::Archive& archive) const;
    void load(const xgrad::Archive& archive);
    std::vector<float> column(std::size_t c) const;
    const std::vector<std::vector<float>>& rows() const { return rows_; }
    const std::string& name() const { return name_; }

private:
    std::string name_;
    std::size_t columns_;
    std::vector<std::vector<float>> rows_;
};

constexpr const char* kLogHeader = "step,d_loss,g_loss,d_real,d_fake";

// The progress line's text: the interval's mean losses and D outputs.
std::string status_text(const Interval& i);

// The noise of the sample grids (64 rows, z ~ U[-1,1] times `truncation`):
// the same for a seed, so the grids of a run show one z turning into a
// digit. For a conditional GAN of `classes` classes: a row of 8 per class,
// column j the same z.
xgrad::Var grid_noise(std::size_t z_dim, std::uint64_t seed, std::size_t classes = 0, float truncation = 1.f);
// The noise a user gives (--noise FILE): FILE's tensor "z", (N, z_dim +
// classes) with 1 <= N <= 1024 (GanConfig::noise_dim). Throws
// std::invalid_argument naming --noise and the file.
xgrad::Var read_noise(const std::string& path, std::size_t z_dim, std::size_t classes = 0);
// `noise` as FILE's tensor "z", for PyTorch's safetensors.torch.load_file.
void write_noise(const xgrad::Var& noise, const std::string& path);
// G's images of fixed_noise (64 rows, or any number) as a grid 8 wide at `path`, each pixel
// a `scale` x `scale` square.
void write_grid(Gan& gan, const xgrad::Var& fixed_noise, bool averaged, const std::string& path, std::size_t scale);

// interpolation.png: kWalks rows (a conditional GAN: one per class) of
// kWalkSteps images, each row G's images along the line from one noise
// vector to another (the first and last columns are G's images of the two ends).
constexpr std::size_t kWalks = 8, kWalkSteps = 10;
// The ends of the W walks (2W rows, z ~ U[-1,1] times `truncation`): row
// r starts at row r and ends at row W + r. The same for a seed, and not
// grid_noise()'s. For a conditional GAN W = classes, and walk c goes
// between the same two z with class c at both ends.
xgrad::Var walk_ends(std::size_t z_dim, std::uint64_t seed, std::size_t classes = 0, float truncation = 1.f);
// The noise of every image of the walks between `ends`, row by row
// (W * kWalkSteps rows); each walk's first and last rows are its ends, exactly.
xgrad::Var latent_walks(const xgrad::Var& ends);
// G's images of latent_walks(walk_ends(...)) at `path` (G's config's z_dim,
// classes and sample_truncation), drawn as write_grid draws.
void write_interpolation(Gan& gan, std::uint64_t seed, bool averaged, const std::string& path, std::size_t scale);
// losses.png and discriminator.png in `out`, from the log's rows.
void write_plots(const History& history, const std::string& out);
// eval.png and eval_fid.png in `out`, from the quality monitor's rows.
void write_quality_plots(const History& quality, const std::string& out);

struct SampleRequest {
    std::size_t count = 0;
    std::uint64_t seed = 0;
    bool averaged = false;
    // A conditional GAN's class for every sample; unset, classes 0, 1, ...
    // in turn, as many of each.
    std::optional<std::size_t> digit;
};
// Streams the request's images of G (drawn at its config's
// sample_truncation) into an IDX file a batch at a time, so that memory
// stays bounded whatever their count. A conditional GAN's
// classes asked for go into labels_path(path) (IDX1). Returns false when
// `interrupted` is set, leaving nothing under path or its temporary name.
bool write_samples(Gan& gan, const SampleRequest& request, const std::string& path, const std::atomic<bool>& interrupted);
// samples.idx's labels: samples_labels.idx.
std::string labels_path(const std::string& samples_path);

// One CSV row: the step, then the row's values after its first (the step as a float).
std::string csv_row(long step, const std::vector<float>& row);
// log.csv and eval.csv start over from the rows of the checkpoint, so that
// after a resume they hold none logged after it (a run killed between a
// log row and the next checkpoint would repeat those rows).
std::unique_ptr<common::TextFile> open_csv(const std::string& path, const std::string& header, const History& rows);

// --out, held for one run. The lock keeps a second mnist_gan out of it (both
// would write the same checkpoint); holding it, the temporary files of our
// outputs can only be left over from a killed run, and are removed.
class OutputDirectory {
public:
    explicit OutputDirectory(const std::string& dir);
    ~OutputDirectory();
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
    explicit QuietUnlessRoot(bool root);
    ~QuietUnlessRoot();
    QuietUnlessRoot(const QuietUnlessRoot&) = delete;
    QuietUnlessRoot& operator=(const QuietUnlessRoot&) = delete;

private:
    std::streambuf* saved_;
};

}  // namespace gan
