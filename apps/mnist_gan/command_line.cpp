#include "command_line.hpp"

#include <stdexcept>

#include "options.hpp"
#include "presets.hpp"

namespace gan {
namespace {

GanConfig config_from(const Options& o) {
    GanConfig c = preset(o.preset_name);
    if (o.steps) c.steps = *o.steps;
    if (o.k) c.k = *o.k;
    if (o.batch) c.batch = *o.batch;
    if (o.z_dim) c.z_dim = *o.z_dim;
    if (o.hidden) c.hidden = *o.hidden;
    if (o.channels) c.channels = *o.channels;
    if (o.lr) c.lr = *o.lr;
    if (o.r1) c.r1_gamma = *o.r1;
    if (o.r1_every) c.r1_every = *o.r1_every;
    if (o.g_loss) c.g_loss = *o.g_loss == "minimax" ? GeneratorLoss::minimax : GeneratorLoss::non_saturating;
    // Not over the Wasserstein game: refuse_ignored_flags refuses --loss there.
    if (o.loss && c.objective != Objective::wasserstein)
        c.objective = *o.loss == "hinge" ? Objective::hinge : Objective::standard;
    if (o.augment) {
        try {
            c.augment = xgrad::parse_augment_policy(*o.augment);
        } catch (const std::invalid_argument& e) {
            throw std::invalid_argument(std::string("--augment: ") + e.what());
        }
    }
    if (o.augment_p) c.augment.probability = *o.augment_p;
    if (o.averaged) c.sample_averaged = *o.averaged;
    if (o.sample_batch_stats) c.sample_with_batch_stats = true;
    if (o.truncation) c.sample_truncation = *o.truncation;
    return c;
}

// A flag that the preset ignores would give another run than the one asked
// for, silently: it is refused, naming the flag and the preset.
void refuse_ignored_flags(const Options& o, const GanConfig& c) {
    const std::string preset = "the " + c.preset + " preset";
    if (c.architecture == Architecture::dcgan && o.hidden) {
        throw std::invalid_argument("--hidden " + std::to_string(*o.hidden) + ": " + preset +
                                    " has no hidden fully connected layers (its widths are --channels)");
    }
    if (c.architecture == Architecture::mlp && o.channels) {
        throw std::invalid_argument("--channels " + std::to_string(*o.channels) + ": " + preset +
                                    " has no convolutions (its width is --hidden)");
    }
    if (o.sample_batch_stats && c.architecture != Architecture::dcgan) {
        throw std::invalid_argument("--sample-batch-stats: " + preset + " has no batch norm (dcgan and cdcgan have)");
    }
    if (o.digit && c.classes == 0) {
        throw std::invalid_argument("--digit " + std::to_string(*o.digit) + ": " + preset +
                                    " is not conditional; it draws no class on request (cdcgan does)");
    }
    if (o.digit && *o.digit >= c.classes) {
        throw std::invalid_argument("--digit " + std::to_string(*o.digit) + ": " + preset + " has classes 0 to " +
                                    std::to_string(c.classes - 1));
    }
    if (o.averaged && c.ema_decay <= 0.f) {
        throw std::invalid_argument(std::string(*o.averaged ? "--ema" : "--no-ema") + ": " + preset +
                                    " keeps no averaged generator (mlp, dcgan and cdcgan do)");
    }
    if (!o.generator.empty()) {
        const std::pair<const char*, bool> training_only[] = {
            {"--steps", bool(o.steps)},       {"--minutes", bool(o.minutes)}, {"--k", bool(o.k)},
            {"--batch", bool(o.batch)},       {"--lr", bool(o.lr)},           {"--r1", bool(o.r1)},
            {"--r1-every", bool(o.r1_every)}, {"--g-loss", bool(o.g_loss)},   {"--ema/--no-ema", bool(o.averaged)},
            {"--loss", bool(o.loss)},         {"--augment", bool(o.augment)}, {"--augment-p", bool(o.augment_p)}};
        for (const auto& [flag, given] : training_only) {
            if (given) throw std::invalid_argument(std::string(flag) + ": --generator trains nothing, it samples the file's net");
        }
    }
    if (o.loss && c.objective == Objective::wasserstein) {
        throw std::invalid_argument("--loss " + *o.loss + ": " + preset +
                                    " plays the Wasserstein game (its critic's loss is fixed; --loss is for the others)");
    }
    if (o.g_loss && c.objective == Objective::hinge) {
        throw std::invalid_argument("--g-loss " + *o.g_loss + ": --loss hinge fixes G's loss (-E[D(G(z))])");
    }
    if (o.augment_p && !c.augment.any()) {
        throw std::invalid_argument("--augment-p: there is no augmentation to apply (it goes with --augment POLICY)");
    }
}

// The game, the nets and their training.
void add_training_options(CLI::App& cli, Options& o) {
    cli.add_option("--preset", o.preset_name,
                   "reference: the paper's setup as specified (D/G 128 hidden, Adam 1e-3/0.9); "
                   "mlp: fully connected, 256 hidden, spectral norm and minibatch stddev in D, averaged G; "
                   "dcgan: convolutional nets with batch norm, samples from the raw G; cdcgan: dcgan conditioned on the "
                   "digit's class (--digit), a row per class in the grids; wgan-gp: the dcgan nets in the "
                   "Wasserstein game with a gradient penalty; default: cdcgan (README, Presets)")
        ->check(CLI::IsMember(preset_names()))
        ->capture_default_str();
    cli.add_option("--steps", o.steps, "Total training steps (default: the preset's; a resumed run continues up to this)")
        ->check(common::unsigned_in(1, kMostSteps));
    cli.add_option("--minutes", o.minutes,
                   "Train for at most M minutes of wall-clock time (fractional allowed): stop after the first step at which "
                   "M minutes have passed, or at --steps if that comes first, then write the final outputs; a resumed run "
                   "gets M minutes anew")
        ->check(common::positive_real_up_to(kMostMinutes));
    cli.add_option("--k", o.k, "Discriminator updates per generator update (default: the preset's)")
        ->check(common::unsigned_in(1, 100));
    cli.add_option("--batch", o.batch, "Minibatch size m (default: the preset's)")->check(common::unsigned_in(1, 65536));
    cli.add_option("--z-dim", o.z_dim, "Noise dimension (default: the preset's)")->check(common::unsigned_in(1, 65536));
    cli.add_option("--hidden", o.hidden, "Hidden units of both nets (default: the preset's)")
        ->check(common::unsigned_in(1, 65536));
    cli.add_option(
           "--channels", o.channels,
           "dcgan: channels of D's first convolution and G's last hidden layer; D's second and G's first have twice as many "
           "(default: the preset's)")
        ->check(common::unsigned_in(1, 4096));
    cli.add_option("--lr", o.lr, "Adam learning rate of both nets (default: the preset's)")->check(common::real_in(1e-7, 1.0));
    cli.add_option("--r1", o.r1,
                   "R1 gradient penalty gamma/2 E||grad_x D(x)||^2 on real samples (Mescheder et al. 2018; default: the "
                   "preset's, 0 = off)")
        ->check(common::real_in(0.0, 1e6));
    cli.add_option("--r1-every", o.r1_every,
                   "Apply R1 lazily, every N-th D update with its loss scaled by N (default: the preset's)")
        ->check(common::unsigned_in(1, 1000000));
    cli.add_option("--g-loss", o.g_loss,
                   "non-saturating: maximise log D(G(z)); minimax: minimise log(1 - D(G(z))) (default: the preset's)")
        ->check(CLI::IsMember({"non-saturating", "minimax"}));
    cli.add_option("--loss", o.loss,
                   "bce: D minimises the cross-entropy of its logits (G's loss then by --g-loss); hinge: D minimises "
                   "E[relu(1 - D(x))] + E[relu(1 + D(G(z)))], G -E[D(G(z))] (Lim & Ye 2017; not for wgan-gp; default: bce)")
        ->check(CLI::IsMember({"bce", "hinge"}));
    cli.add_option("--augment", o.augment,
                   "Differentiable augmentation of every input of D (DiffAugment, Zhao et al. 2020): translation, cutout "
                   "and color, comma-separated, or none (default: none)");
    cli.add_option("--augment-p", o.augment_p, "With --augment: the probability of each transform for each image (default: 1)")
        ->check(common::real_in(0.0, 1.0));
}

// Where the run writes, and how often.
void add_output_options(CLI::App& cli, Options& o) {
    o.add_shared_options(cli, "Random seed: same seed and thread count give identical results");
    cli.add_option("--out", o.out, "Output directory (grids, plots, log.csv, checkpoint.xgrad)")->capture_default_str();
    cli.add_option("--grid-every", o.grid_every, "Write an 8x8 sample grid every N steps (0: only at the end)")
        ->check(common::unsigned_in(0, 100000000))
        ->capture_default_str();
    cli.add_option("--grid-scale", o.grid_scale, "Draw each pixel of the sample grids as an N x N square")
        ->check(common::unsigned_in(1, 16))
        ->capture_default_str();
    cli.add_option("--checkpoint-every", o.checkpoint_every, "Write OUT/checkpoint.xgrad every N steps (0: only at the end)")
        ->check(common::unsigned_in(0, 100000000))
        ->capture_default_str();
    cli.add_option("--log-every", o.log_every, "Append averages to OUT/log.csv every N steps")
        ->check(common::unsigned_in(1, 100000000))
        ->capture_default_str();
    cli.add_flag("--resume", o.resume, "Continue from OUT/checkpoint.xgrad (bit-exact with the same seed and threads)");
}

// Measuring, sampling and exporting the trained nets.
void add_sampling_options(CLI::App& cli, Options& o) {
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
    // Through a function: CLI11 2.1.2 takes an optional<bool> for a flag counter and sets it to 0 on declaration.
    cli.add_flag_function(
           "--ema,!--no-ema", [&o](std::int64_t ema) { o.averaged = ema > 0; },
           "Write grids and samples.idx from the averaged generator, or the raw one (default: the preset's; eval.csv always "
           "has both)")
        ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
    cli.add_flag("--sample-batch-stats", o.sample_batch_stats,
                 "Generate with each batch's own normalization statistics instead of the running ones (dcgan)");
    cli.add_option("--truncation", o.truncation,
                   "Draw the grids, samples, interpolation and quality measurements from z ~ U[-1,1] times PSI, the "
                   "truncation trick: each digit more typical of its class, the set a little less varied; 1 = none; "
                   "training is untouched (default: the preset's)")
        ->check(common::positive_real_up_to(1.0));
    cli.add_option("--samples", o.samples,
                   "After training, write N generated images to OUT/samples.idx (IDX3, bytes); a conditional preset also "
                   "writes the class asked for of each to OUT/samples_labels.idx (IDX1), classes in turn unless --digit")
        ->check(common::unsigned_in(0, 10000000));
    cli.add_option("--digit", o.digit, "With --samples and a conditional preset (cdcgan): every sample of class D")
        ->check(common::unsigned_in(0, 255))
        ->needs("--samples");
    auto* export_dir =
        cli.add_option("--export", o.export_dir,
                       "After training (or, with --resume, from the checkpoint), write DIR/generator.safetensors (the "
                       "generator that samples), DIR/discriminator.safetensors and DIR/noise.safetensors (the noise of "
                       "grid_final.png), loadable by PyTorch (docs/pytorch.md)");
    cli.add_option("--generator", o.generator,
                   "Train nothing: load the preset's generator from FILE (a generator.safetensors of --export, or PyTorch's "
                   "state dict of the same net) and write OUT/grid_final.png, OUT/interpolation.png and, with --samples N, "
                   "OUT/samples.idx")
        ->check(CLI::ExistingFile)
        ->excludes(classifier)
        ->excludes(export_dir)
        ->excludes("--resume");
    cli.add_option("--noise", o.noise,
                   "With --generator: draw OUT/grid_final.png from FILE's tensor 'z' (N x z-dim, N <= 1024, 8 per row; "
                   "the noise.safetensors of --export, or PyTorch's save_file) instead of the seed's noise")
        ->check(CLI::ExistingFile)
        ->needs("--generator");
}

}  // namespace

void add_options(CLI::App& cli, Options& o) {
    o.data.add_options(cli, "train-images-idx3-ubyte and train-labels-idx1-ubyte");
    add_training_options(cli, o);
    add_output_options(cli, o);
    add_sampling_options(cli, o);
}

GanConfig configure(const Options& o) {
    const GanConfig config = config_from(o);
    refuse_ignored_flags(o, config);
    return config;
}

}  // namespace gan
