#include "checkpoint.hpp"

#include <cmath>
#include <cstdio>
#include <iostream>
#include <sstream>
#include <stdexcept>

#include <zlib.h>

#include <xgrad/io/archive_file.hpp>

#include "numbers.hpp"

namespace gan {
namespace {

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

const std::string* text_or_null(const xgrad::Archive& archive, const std::string& name) {
    const auto found = archive.texts().find(name);
    return found == archive.texts().end() ? nullptr : &found->second;
}

}  // namespace

const char* g_loss_name(GeneratorLoss loss) { return loss == GeneratorLoss::minimax ? "minimax" : "non-saturating"; }

const char* loss_name(Objective objective) {
    return objective == Objective::hinge ? "hinge" : objective == Objective::wasserstein ? "wasserstein" : "bce";
}

std::string exact(float v) {
    char text[32];
    std::snprintf(text, sizeof text, "%.9g", double(v));
    return text;
}

std::string data_fingerprint(const xgrad::IdxImages& images) {
    char crc[16];
    std::snprintf(crc, sizeof crc, "%08lx", crc32_z(0L, images.pixels.data(), images.pixels.size()));
    return std::to_string(images.count) + " images of " + std::to_string(images.rows) + " x " + std::to_string(images.cols) +
           " pixels, CRC-32 " + crc;
}

std::vector<Setting> training_settings(const Options& o, const GanConfig& c, const std::string& data) {
    return {{"lr", "--lr", exact(c.lr)},
            {"batch", "--batch", std::to_string(c.batch)},
            {"k", "--k", std::to_string(c.k)},
            {"r1", "--r1", exact(c.r1_gamma)},
            {"r1_every", "--r1-every", std::to_string(c.r1_every)},
            {"g_loss", "--g-loss", g_loss_name(c.g_loss)},
            {"loss", "--loss", loss_name(c.objective)},
            {"augment", "--augment", xgrad::augment_policy_text(c.augment)},
            {"augment_p", "--augment-p", exact(c.augment.probability)},
            {"beta1", "--preset (Adam beta1)", exact(c.beta1)},
            {"beta2", "--preset (Adam beta2)", exact(c.beta2)},
            {"real_label", "--preset (real label)", exact(c.real_label)},
            {"d_leaky_slope", "--preset (LeakyReLU slope)", exact(c.d_leaky_slope)},
            {"seed", "--seed", std::to_string(o.seed)},
            {"data", "--data (training images)", data}};
}

std::vector<std::pair<std::string, std::string>> rank_settings(const Options& o, const GanConfig& c, const std::string& data) {
    const bool mlp = c.architecture == Architecture::mlp;
    std::vector<std::pair<std::string, std::string>> out{
        {"--preset", c.preset},
        {"--z-dim", std::to_string(c.z_dim)},
        {mlp ? "--hidden" : "--channels", std::to_string(mlp ? c.hidden : c.channels)},
    };
    for (const Setting& s : training_settings(o, c, data)) out.emplace_back(s.option, s.value);
    const auto given = [](bool yes) { return std::string(yes ? "given" : "not given"); };
    char minutes[32] = "not given";  // given, every rank calls the collective that ends the budget
    if (o.minutes) std::snprintf(minutes, sizeof minutes, "%.17g", *o.minutes);
    out.insert(out.end(), {{"--steps", std::to_string(c.steps)},
                           {"--minutes", minutes},
                           {"--grid-every", std::to_string(o.grid_every)},
                           {"--checkpoint-every", std::to_string(o.checkpoint_every)},
                           {"--classifier", given(!o.classifier.empty())},
                           {"--eval-every", std::to_string(o.classifier.empty() ? 0 : o.eval_every)},
                           {"--resume", given(o.resume)}});
    return out;
}

std::optional<std::string> try_save_checkpoint(const RunState& run) {
    try {
        save_checkpoint(run);
        return std::nullopt;
    } catch (const Diverged& e) {
        return std::string(e.what());
    }
}

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

}  // namespace gan
