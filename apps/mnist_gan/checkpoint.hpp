// What a checkpoint holds besides the GAN (the logged curves, the
// sampler's position, the settings a resumed run must keep), its writing,
// and its checks on --resume.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <xgrad/core/archive.hpp>
#include <xgrad/io/idx.hpp>

#include "command_line.hpp"
#include "data.hpp"
#include "gan.hpp"
#include "outputs.hpp"

namespace gan {

// --g-loss's name for `loss`.
const char* g_loss_name(GeneratorLoss loss);
// --loss's name for `objective` ("wasserstein" for the wgan-gp preset's).
const char* loss_name(Objective objective);

// A float as text that reads back as the same float.
std::string exact(float v);

// The training set as a checkpoint records it: the same images under
// another path are the same data.
std::string data_fingerprint(const xgrad::IdxImages& images);

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
std::vector<Setting> training_settings(const Options& o, const GanConfig& c, const std::string& data);

// What the ranks of a data-parallel run must share (docs/distributed.md):
// everything that decides the updates, and everything that decides when
// they meet in a collective (the statistics average before grids,
// evaluations and checkpoints; the run length, and whether a --minutes
// budget is checked after every step). Ranks that differ would
// wait for each other forever or pair collectives of different sizes.
std::vector<std::pair<std::string, std::string>> rank_settings(const Options& o, const GanConfig& c, const std::string& data);

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

// Saves; for a state that must not be saved, says why (the last good
// checkpoint then stays).
std::optional<std::string> try_save_checkpoint(const RunState& run);

// The checkpoint at `path` loaded as --resume does; every failure names the file.
// `data` and `interval` (may be null) take their sampler position and log interval back.
xgrad::Archive load_checkpoint(const std::string& path, Gan& gan, DataSource* data, History& history, History& quality,
                               Interval* interval);

// A resumed run continues the same training: a changed setting is refused
// with both values.
void check_resumed_settings(const xgrad::Archive& archive, const RunState& run);

}  // namespace gan
