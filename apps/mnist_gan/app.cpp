#include "app.hpp"

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>

#include <CLI/CLI.hpp>

#include <xgrad/core/parallel.hpp>
#include <xgrad/io/idx.hpp>
#include <xgrad/io/progress.hpp>
#include <xgrad/io/safetensors.hpp>

#include "checkpoint.hpp"
#include "command_line.hpp"
#include "data.hpp"
#include "data_location.hpp"
#include "gan.hpp"
#include "outputs.hpp"
#include "program.hpp"
#include "quality_monitor.hpp"

namespace gan {
namespace {

namespace fs = std::filesystem;
using xgrad::Tensor;
using xgrad::Var;

std::atomic<bool> interrupted{false};
extern "C" void on_interrupt(int) { interrupted = true; }

// How often the ranks compare their parameters (a checksum, ~0.1 ms).
constexpr long kCompareRanksEvery = 100;

// The training images, their epochs shuffled from a stream of their own,
// and what a checkpoint records of them.
struct TrainingSet {
    std::string dir, fingerprint;
    std::size_t count;
    ImageData images;
};

TrainingSet load_training_set(const std::string& dir, std::uint64_t seed) {
    xgrad::Dataset set =
        xgrad::load_dataset(common::find_idx(dir, "train-images-idx3-ubyte"), common::find_idx(dir, "train-labels-idx1-ubyte"));
    const std::size_t count = set.images.count;
    if (count == 0) throw std::runtime_error("the training set in '" + dir + "' holds no images");
    std::string fingerprint = data_fingerprint(set.images);
    // Moved, not copied: 47 MB for a 60,000-image set.
    return TrainingSet{dir, std::move(fingerprint), count,
                       ImageData(std::move(set.images), seed ^ 0x5bd1e995u, std::move(set.labels))};
}

// One run of mnist_gan around its training loop (train()): what it sets up
// (--out, the data, the GAN, resumed with --resume; the logs), what it
// writes every N steps, and what it writes at the end. Under mpirun every
// rank holds one (with `distributed`, else null): all train, rank 0 alone
// prints and writes files. The methods that call gan.average_statistics()
// are collective: every rank calls them at the same step.
class Training {
public:
    Training(const Options& o, const GanConfig& config, const xgrad::Distributed* distributed);
    Gan& gan() { return gan_; }
    DataSource& data() { return set_.images; }
    bool evaluating() const { return !o_.classifier.empty(); }

    // Whether the --minutes budget ran out with the step just done (always
    // false without --minutes). Rank 0's clock decides for every rank: the
    // ranks started their clocks at different moments, and one that stopped
    // alone would leave the others waiting in the next step's collective.
    // Collective with --minutes: every rank calls it after every step.
    bool out_of_time();
    // The progress line, and every --log-every steps (and at the last step) a row of log.csv.
    void log(const StepStats& stats);
    // Every kCompareRanksEvery steps, that the ranks still agree.
    void compare_ranks(long step) const;
    void write_grid(long step);
    void evaluate(long step);
    // Saves the checkpoint; for a state that must not be saved, says why.
    std::optional<std::string> checkpoint();
    // The exit codes of a run that ends early.
    int diverged(long step, const std::string& what);
    int interrupted_at(long step);
    // After the last step: the final evaluation, checkpoint, grid, plots and samples.
    int finish();

private:
    void resume();
    void measure_quality(long step);
    void announce() const;
    double training_seconds() const;
    std::string budget_text() const;  // "--minutes 0.5 (30 s)"

    const Options& o_;
    const GanConfig& config_;
    const xgrad::Distributed* distributed_;
    const bool root_;
    const QuietUnlessRoot quiet_;
    // --out first: an unusable output directory fails before any long work.
    const std::unique_ptr<OutputDirectory> out_directory_;
    TrainingSet set_;
    const std::string checkpoint_path_;
    Gan gan_;
    History history_{"history", 5}, quality_{"quality", QualityMonitor::kColumns};
    Interval interval_;
    const RunState run_;
    std::unique_ptr<common::TextFile> log_, eval_log_;
    std::unique_ptr<QualityMonitor> monitor_;
    Var fixed_noise_;
    std::optional<xgrad::Progress> progress_;
    std::vector<Var> parameters_;
    long first_step_ = 0;
    std::chrono::steady_clock::time_point training_started_;
    bool out_of_time_ = false;
};

Training::Training(const Options& o, const GanConfig& config, const xgrad::Distributed* distributed)
    : o_(o),
      config_(config),
      distributed_(distributed),
      root_(!distributed || distributed->is_root()),
      quiet_(root_),
      out_directory_(root_ ? std::make_unique<OutputDirectory>(o.out) : nullptr),
      set_(load_training_set(o.data.directory(), o.seed)),
      checkpoint_path_(o.out + "/checkpoint.xgrad"),
      gan_(config, o.seed),
      run_{gan_,
           set_.images,
           history_,
           quality_,
           interval_,
           training_settings(o, config, set_.fingerprint),
           o.threads,
           distributed ? distributed->size() : 1,
           checkpoint_path_} {
    if (distributed_) {
        // Before the first collective whose size depends on them.
        distributed_->check_same_settings(rank_settings(o_, config_, set_.fingerprint));
        try {
            gan_.distribute(*distributed_);
        } catch (const std::invalid_argument& e) {
            throw std::invalid_argument(std::string("--batch: ") + e.what());
        }
    }
    if (o_.resume) resume();
    if (root_) log_ = open_csv(o_.out + "/log.csv", kLogHeader, history_);
    if (evaluating() && root_) {
        monitor_ = std::make_unique<QualityMonitor>(o_.classifier, set_.dir, config_, o_.seed + 3);
        eval_log_ = open_csv(o_.out + "/eval.csv", kEvalHeader, quality_);
    }
    fixed_noise_ = grid_noise(config_.z_dim, o_.seed, config_.classes, config_.sample_truncation);
    announce();
    std::signal(SIGINT, on_interrupt);
    std::signal(SIGTERM, on_interrupt);
    parameters_ = gan_.parameters();
    first_step_ = gan_.steps_done();
    // The budget counts from here, after the data and any checkpoint are loaded.
    progress_.emplace(static_cast<std::size_t>(config_.steps - gan_.steps_done()));
    if (o_.minutes) progress_->set_time_budget(*o_.minutes * 60);
    training_started_ = std::chrono::steady_clock::now();
}

void Training::resume() {
    if (!fs::exists(checkpoint_path_)) throw std::runtime_error("--resume: no checkpoint at '" + checkpoint_path_ + "'");
    check_resumed_settings(load_checkpoint(checkpoint_path_, gan_, &set_.images, history_, quality_, &interval_), run_);
    // Every rank reads --out's checkpoint: ranks that read different
    // files would run different step counts.
    if (distributed_) {
        char parameters[32];
        std::snprintf(parameters, sizeof parameters, "checksum %016llx",
                      static_cast<unsigned long long>(xgrad::checksum(gan_.parameters())));
        distributed_->check_same_settings({{"the resumed checkpoint's step", std::to_string(gan_.steps_done())},
                                           {"the resumed checkpoint's parameters", parameters}});
    }
    if (gan_.steps_done() > config_.steps) {
        throw std::runtime_error("--steps " + std::to_string(config_.steps) + ": the checkpoint '" + checkpoint_path_ +
                                 "' is already at step " + std::to_string(gan_.steps_done()) +
                                 "; pass a larger --steps to train further");
    }
    std::cerr << "resumed from " << checkpoint_path_ << " at step " << gan_.steps_done() << "\n";
    if (gan_.steps_done() == config_.steps)
        std::cerr << "nothing to train: --steps " << config_.steps << " are done; writing the final outputs\n";
}

// The fewest digits that read back as v: 0.1, not exact()'s 0.100000001.
std::string shortest(float v) {
    char text[32];
    for (int digits = 1; digits < 9; ++digits) {
        std::snprintf(text, sizeof text, "%.*g", digits, double(v));
        if (std::strtof(text, nullptr) == v) return text;
    }
    return exact(v);
}

void Training::announce() const {
    const GanConfig& c = config_;
    std::cerr << "mnist_gan: " << set_.count << " training images from " << set_.dir << "; "
              << "preset=" << c.preset << " " << c.architecture_text() << " batch=" << c.batch << " k=" << c.k << " lr=" << c.lr
              << (c.objective == gan::Objective::wasserstein ? " objective=wasserstein gp_lambda=" + exact(c.gp_lambda)
                  : c.objective == gan::Objective::hinge     ? std::string(" loss=hinge")
                                                             : " g_loss=" + std::string(g_loss_name(c.g_loss)))
              << (c.r1_gamma > 0.f ? " r1=" + shortest(c.r1_gamma) + " every " + std::to_string(c.r1_every) : "")
              << (c.augment.any() ? " augment=" + xgrad::augment_policy_text(c.augment) +
                                        (c.augment.probability < 1.f ? " p=" + shortest(c.augment.probability) : "")
                                  : "")
              << (c.sample_truncation < 1.f ? " truncation=" + shortest(c.sample_truncation) : "") << "\n";
    if (o_.minutes)
        std::cerr << "time budget: --minutes " << budget_text() << " of training, or up to step " << c.steps
                  << " if that comes first\n";
    if (run_.ranks > 1)
        std::cerr << "data-parallel over " << run_.ranks << " ranks: " << c.batch / run_.ranks
                  << " samples of each batch per rank\n";
}

double Training::training_seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - training_started_).count();
}

std::string Training::budget_text() const {
    char text[64];
    std::snprintf(text, sizeof text, "%g (%g s)", *o_.minutes, *o_.minutes * 60);
    return text;
}

bool Training::out_of_time() {
    if (!o_.minutes) return false;
    const bool spent = root_ && training_seconds() >= *o_.minutes * 60;
    out_of_time_ = distributed_ ? distributed_->any(spent) : spent;
    return out_of_time_;
}

void Training::log(const StepStats& stats) {
    const long step = gan_.steps_done();
    interval_.add(stats);
    progress_->update(static_cast<std::size_t>(step - first_step_), status_text(interval_));
    if (step % o_.log_every == 0 || step == config_.steps || out_of_time_) {
        history_.add(interval_.row(step));
        if (log_) log_->write(csv_row(step, history_.rows().back()));
        interval_ = Interval{};
    }
}

void Training::compare_ranks(long step) const {
    if (distributed_ && step % kCompareRanksEvery == 0) distributed_->check_same(parameters_, step);
}

void Training::write_grid(long step) {
    gan_.average_statistics();
    char name[64];
    std::snprintf(name, sizeof name, "/grid_%07ld.png", step);
    if (root_) gan::write_grid(gan_, fixed_noise_, config_.sample_averaged, o_.out + name, o_.grid_scale);
}

void Training::evaluate(long step) {
    gan_.average_statistics();
    progress_->finish();
    if (root_) measure_quality(step);
}

void Training::measure_quality(long step) {
    std::vector<float> row = monitor_->measure(gan_, step);
    eval_log_->write(csv_row(step, row));
    std::cerr << std::fixed << std::setprecision(3) << "step " << step << ": classifier score " << row[1] << ", coverage "
              << row[2] << " bits (class shares " << row[3] << " to " << row[4] << "), FID " << std::setprecision(2) << row[5]
              << "\n";
    quality_.add(std::move(row));
}

std::optional<std::string> Training::checkpoint() {
    gan_.average_statistics();
    if (!root_) return std::nullopt;
    return try_save_checkpoint(run_);
}

int Training::diverged(long step, const std::string& what) {
    progress_->finish();
    std::cerr << "error: training diverged at step " << step << " (" << what << "); the last good checkpoint is kept at "
              << checkpoint_path_ << "\n";
    return 3;
}

int Training::interrupted_at(long step) {
    progress_->finish();
    std::cerr << "interrupted at step " << step << "; checkpoint written to " << checkpoint_path_
              << "; continue with the same command plus --resume\n";
    return 130;
}

int Training::finish() {
    progress_->finish();
    gan_.average_statistics();
    if (!root_) return 0;  // the rest is rank 0's outputs
    const long steps = gan_.steps_done();
    if (out_of_time_) {
        char seconds[32];
        std::snprintf(seconds, sizeof seconds, "%.1f s", training_seconds());
        std::cerr << "--minutes " << budget_text() << ": the time budget ran out at step " << steps << " of --steps "
                  << config_.steps << ", after " << seconds << " of training\n";
    }
    if (monitor_ && (quality_.rows().empty() || long(quality_.rows().back()[0]) != steps)) measure_quality(steps);
    if (const auto bad = try_save_checkpoint(run_)) return diverged(steps, *bad + " after the update");

    // Training is saved; the rest derives from the checkpoint, so an
    // interruption from here on loses nothing that --resume cannot redo.
    const auto stopped = [&](const std::string& unwritten) {
        std::cerr << "interrupted after training (step " << steps << ", checkpoint written to " << checkpoint_path_ << "); "
                  << unwritten << " not written: run the same command plus --resume to write them\n";
        return 130;
    };
    if (interrupted)
        return stopped(o_.samples > 0 ? "the final grid, interpolation, plots and samples.idx"
                                      : "the final grid, interpolation and plots");
    gan::write_grid(gan_, fixed_noise_, config_.sample_averaged, o_.out + "/grid_final.png", o_.grid_scale);
    write_interpolation(gan_, o_.seed, config_.sample_averaged, o_.out + "/interpolation.png", o_.grid_scale);
    write_plots(history_, o_.out);
    write_quality_plots(quality_, o_.out);
    if (o_.samples > 0) {
        const std::string samples_path = o_.out + "/samples.idx";
        std::cerr << "writing " << o_.samples << " samples to " << samples_path
                  << (config_.classes > 0 ? " and their classes to " + labels_path(samples_path) : "") << "\n";
        if (interrupted ||
            !write_samples(gan_, {o_.samples, o_.seed + 2, config_.sample_averaged, o_.digit}, samples_path, interrupted))
            return stopped("samples.idx");
    }
    if (!o_.export_dir.empty()) {
        fs::create_directories(o_.export_dir);
        const std::string g_path = o_.export_dir + "/generator.safetensors",
                          d_path = o_.export_dir + "/discriminator.safetensors", z_path = o_.export_dir + "/noise.safetensors";
        xgrad::save_safetensors(gan_.sampling_generator(config_.sample_averaged), g_path);
        xgrad::save_safetensors(gan_.discriminator(), d_path);
        write_noise(fixed_noise_, z_path);
        std::cerr << "exported " << g_path << ", " << d_path << " (safetensors, PyTorch's names and layouts) and " << z_path
                  << " (z of grid_final.png)\n";
    }

    xgrad::Rng eval_rng(o_.seed + 1);
    const double value = gan_.value_estimate(set_.images, 20, eval_rng);
    std::cerr << std::fixed << std::setprecision(4) << "done: " << steps << " steps"
              << (out_of_time_ ? " (stopped by --minutes)" : "") << "; V(D,G) = " << value
              << " on 20 fresh batches (the game's optimum: -log 4 = " << -std::log(4.0) << ")\n"
              << "wrote " << o_.out
              << "/grid_final.png, interpolation.png, losses.png, discriminator.png, log.csv, checkpoint.xgrad"
              << (o_.samples > 0 ? config_.classes > 0 ? ", samples.idx, samples_labels.idx" : ", samples.idx" : "")
              << (monitor_ ? ", eval.csv, eval.png, eval_fid.png" : "") << "\n";
    return 0;
}

// Algorithm 1 of Goodfellow et al. (2014) as mnist_gan runs it: each step
// trains D, then G (Gan::step), and every N steps the run writes a grid,
// measures sample quality and saves a checkpoint.
int train(const Options& o, const GanConfig& config, const xgrad::Distributed* distributed) {
    xgrad::set_num_threads(o.threads);
    Training run(o, config, distributed);
    Gan& gan = run.gan();
    const auto every = [&](long n) { return n > 0 && gan.steps_done() % n == 0; };
    // With --minutes, --steps is an upper bound: whichever ends first ends training.
    for (bool out_of_time = false; gan.steps_done() < config.steps && !out_of_time;) {
        const StepStats stats = gan.step(run.data(), interrupted);
        const long step = gan.steps_done();
        if (!std::isfinite(stats.d_loss) || !std::isfinite(stats.g_loss)) {
            std::ostringstream losses;
            losses << "D loss " << stats.d_loss << ", G loss " << stats.g_loss;
            return run.diverged(step, losses.str());
        }
        out_of_time = run.out_of_time();
        run.log(stats);
        run.compare_ranks(step);
        if (every(o.grid_every)) run.write_grid(step);
        if (run.evaluating() && every(o.eval_every)) run.evaluate(step);
        if (every(o.checkpoint_every) || stats.stop) {
            if (const auto bad = run.checkpoint()) return run.diverged(step, *bad + " after the update");
        }
        if (stats.stop) return run.interrupted_at(step);
    }
    return run.finish();
}

// mnist_gan --generator FILE: no training. FILE's weights go into the
// preset's generator, which draws the grid and the samples a run with the
// same --seed draws from the net it exported.
int sample_saved_generator(const Options& o, const GanConfig& config) {
    const OutputDirectory out_directory(o.out);
    Gan gan(config, o.seed);
    xgrad::load_safetensors(gan.sampling_generator(false), o.generator);
    const std::string grid_path = o.out + "/grid_final.png", interpolation_path = o.out + "/interpolation.png";
    const Var noise = o.noise.empty() ? grid_noise(config.z_dim, o.seed, config.classes, config.sample_truncation)
                                      : read_noise(o.noise, config.z_dim, config.classes);
    write_grid(gan, noise, false, grid_path, o.grid_scale);
    write_interpolation(gan, o.seed, false, interpolation_path, o.grid_scale);
    std::cerr << "mnist_gan: the " << config.preset << " preset's generator from " << o.generator << "\nwrote " << grid_path
              << ", " << interpolation_path;
    if (o.samples > 0) {
        std::signal(SIGINT, on_interrupt);
        std::signal(SIGTERM, on_interrupt);
        const std::string samples_path = o.out + "/samples.idx";
        if (!write_samples(gan, {o.samples, o.seed + 2, false, o.digit}, samples_path, interrupted)) {
            std::cerr << "\ninterrupted: " << samples_path << " not written\n";
            return 130;
        }
        std::cerr << " and " << o.samples << " samples to " << samples_path
                  << (config.classes > 0 ? " (their classes in " + labels_path(samples_path) + ")" : "");
    }
    std::cerr << "\n";
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
    add_options(cli, o);
    const bool several = distributed && distributed->size() > 1;
    // Rank 0 alone prints the help or the error.
    if (const auto code = common::parse(cli, argc, argv, several && !distributed->is_root())) return *code;
    const std::string program =
        several ? "mnist_gan: rank " + std::to_string(distributed->rank()) + " of " + std::to_string(distributed->size())
                : "mnist_gan";
    // RanksDisagree is thrown on every rank: Distributed::run prints it and ends the job in order.
    return common::run_reporting_errors<xgrad::RanksDisagree>(program, "try a smaller --batch, --hidden or --z-dim", [&] {
        if (o.generator.empty()) return train(o, configure(o), several ? distributed : nullptr);
        if (several) throw std::invalid_argument("--generator: sampling runs as one process, not under mpirun");
        return sample_saved_generator(o, configure(o));
    });
}

}  // namespace gan
