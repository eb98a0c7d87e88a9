#include "outputs.hpp"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <stdexcept>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <xgrad/io/idx.hpp>
#include <xgrad/io/image.hpp>
#include <xgrad/io/safetensors.hpp>

namespace gan {
namespace {

namespace fs = std::filesystem;
using xgrad::Tensor;
using xgrad::Var;

constexpr const char* kIntervalName = "log_interval";

// `rows` noise vectors z ~ U[-1,1]^z_dim times `truncation`, the same for a
// stream seed: the noise of the outputs that show the same z at every call.
Var fixed_noise(std::size_t rows, std::size_t z_dim, std::uint64_t stream_seed, float truncation) {
    xgrad::Rng rng(stream_seed);
    Var noise(Tensor::from_shape({rows, z_dim}));
    draw_noise(rng, noise.mutable_value(), truncation);
    return noise;
}

// For a conditional GAN: `z`'s rows repeated for each class, class by
// class, each with its class's one-hot after it. `z` itself otherwise.
Var for_each_class(const Var& z, std::size_t classes) {
    if (classes == 0) return z;
    const std::size_t rows = z.shape()[0], z_dim = z.shape()[1];
    Var noise(Tensor::from_shape({classes * rows, z_dim + classes}));
    Tensor& out = noise.mutable_value();
    for (std::size_t c = 0; c < classes; ++c) {
        for (std::size_t r = 0; r < rows; ++r) {
            std::copy_n(z.value().data() + r * z_dim, z_dim, out.data() + (c * rows + r) * (z_dim + classes));
            set_class(out, c * rows + r, classes, c);
        }
    }
    return noise;
}

// The files this program writes into --out (not what else may be there).
bool is_output_name(const std::string& name) {
    static const char* const kFixed[] = {"checkpoint.xgrad", "log.csv",           "eval.csv",          "samples.idx",
                                         "grid_final.png",   "losses.png",        "discriminator.png", "eval.png",
                                         "eval_fid.png",     "interpolation.png", "samples_labels.idx"};
    for (const char* fixed : kFixed) {
        if (name == fixed) return true;
    }
    return name.size() > 9 && name.compare(0, 5, "grid_") == 0 && name.compare(name.size() - 4, 4, ".png") == 0;
}

}  // namespace

std::string labels_path(const std::string& samples_path) {
    const std::string stem = samples_path.size() > 4 && samples_path.compare(samples_path.size() - 4, 4, ".idx") == 0
                                 ? samples_path.substr(0, samples_path.size() - 4)
                                 : samples_path;
    return stem + "_labels.idx";
}

void Interval::save(xgrad::Archive& archive) const {
    char text[160];
    std::snprintf(text, sizeof text, "%ld %a %a %a %a", steps, d_loss, g_loss, d_real, d_fake);
    archive.put_text(kIntervalName, text);
}
void Interval::load(const xgrad::Archive& archive) {
    *this = Interval{};
    if (!archive.texts().count(kIntervalName)) return;
    const std::string& text = archive.text(kIntervalName);
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
        throw std::runtime_error("the text '" + std::string(kIntervalName) + "' is '" + text +
                                 "', expected a step count and four sums");
}

void History::save(xgrad::Archive& archive) const {
    Tensor t = Tensor::from_shape({rows_.size(), columns_});
    for (std::size_t r = 0; r < rows_.size(); ++r) {
        for (std::size_t c = 0; c < columns_; ++c) t(r, c) = rows_[r][c];
    }
    archive.put(name_, t);
}
void History::load(const xgrad::Archive& archive) {
    const Tensor& t = archive.tensor(name_);
    if (t.shape()[1] != columns_) {
        throw std::runtime_error("the checkpoint's '" + name_ + "' has " + std::to_string(t.shape()[1]) + " columns, expected " +
                                 std::to_string(columns_));
    }
    rows_.clear();
    for (std::size_t r = 0; r < t.shape()[0]; ++r) rows_.emplace_back(&t(r, 0), &t(r, 0) + columns_);
}
std::vector<float> History::column(std::size_t c) const {
    std::vector<float> out;
    for (const auto& row : rows_) out.push_back(row[c]);
    return out;
}

std::string status_text(const Interval& i) {
    const double n = std::max<long>(i.steps, 1);
    std::ostringstream s;
    s << std::fixed << std::setprecision(3) << "D " << i.d_loss / n << "  G " << i.g_loss / n << "  D(x) " << i.d_real / n
      << "  D(G(z)) " << i.d_fake / n;
    return s.str();
}

Var grid_noise(std::size_t z_dim, std::uint64_t seed, std::size_t classes, float truncation) {
    // Conditional: a row per class, each column one z.
    return for_each_class(fixed_noise(classes > 0 ? 8 : 64, z_dim, seed ^ 0x9e3779b97f4a7c15ULL, truncation), classes);
}

Var read_noise(const std::string& path, std::size_t z_dim, std::size_t classes) {
    const auto tensors = xgrad::read_safetensors(path);
    const auto z = tensors.find("z");
    const auto refuse = [&](const std::string& what) { throw std::invalid_argument("--noise " + path + ": " + what); };
    const std::string width =
        std::to_string(z_dim + classes) +
        (classes > 0 ? ", the preset's --z-dim values then a one-hot of " + std::to_string(classes) + " classes"
                     : ", the preset's --z-dim");
    if (z == tensors.end()) refuse("no tensor named 'z' (expected the noise as z, N x " + width + ")");
    const xgrad::Shape& shape = z->second.shape;
    if (shape.size() != 2 || shape[1] != z_dim + classes || shape[0] < 1 || shape[0] > 1024) {
        refuse("z has shape " + xgrad::shape_string(shape) + " (expected N x " + width + ", with 1 <= N <= 1024)");
    }
    const Tensor& values = z->second.values;
    if (!std::all_of(values.begin(), values.end(), [](float v) { return std::isfinite(v); })) {
        refuse("z holds a value that is not finite");
    }
    return Var(values);
}

void write_noise(const Var& noise, const std::string& path) { xgrad::write_safetensors(path, {{"z", noise.value()}}); }

void write_grid(Gan& gan, const Var& fixed_noise, bool averaged, const std::string& path, std::size_t scale) {
    const Var images = gan.generate(fixed_noise, averaged);
    xgrad::write_image_grid(path, images.value(), 28, 28, 8, 2, scale);
}

Var walk_ends(std::size_t z_dim, std::uint64_t seed, std::size_t classes, float truncation) {
    const std::uint64_t stream = seed ^ 0xc2b2ae3d27d4eb4fULL;  // a stream of its own: not the grid's digits
    if (classes == 0) return fixed_noise(2 * kWalks, z_dim, stream, truncation);
    // Walk c from the start z to the end z, both of class c.
    const Var ends = fixed_noise(2, z_dim, stream, truncation), starts = for_each_class(xgrad::narrow(ends, 0, 0, 1), classes);
    return xgrad::concat({starts, for_each_class(xgrad::narrow(ends, 0, 1, 1), classes)}, 0);
}

// Linear, not spherical: every preset draws z ~ U[-1,1]^d (Gan::sample_noise),
// a cube, which holds the whole segment between two of its points, so each
// step of a walk is noise of the kind G was trained on. Slerp is for
// Gaussian noise, whose mass lies near a sphere that a straight line cuts
// inside of (White 2016, "Sampling Generative Networks"); no preset draws it.
Var latent_walks(const Var& ends) {
    const Tensor& z = ends.value();
    const std::size_t z_dim = z.shape()[1], count = z.shape()[0] / 2;
    Var walks(Tensor::from_shape({count * kWalkSteps, z_dim}));
    Tensor& out = walks.mutable_value();
    for (std::size_t walk = 0; walk < count; ++walk) {
        for (std::size_t step = 0; step < kWalkSteps; ++step) {
            const float t = float(step) / float(kWalkSteps - 1);
            // (1 - t) a + t b, not a + t (b - a): the ends come out exactly.
            for (std::size_t i = 0; i < z_dim; ++i)
                out(walk * kWalkSteps + step, i) = (1.f - t) * z(walk, i) + t * z(count + walk, i);
        }
    }
    return walks;
}

void write_interpolation(Gan& gan, std::uint64_t seed, bool averaged, const std::string& path, std::size_t scale) {
    const GanConfig& c = gan.config();
    const Var images = gan.generate(latent_walks(walk_ends(c.z_dim, seed, c.classes, c.sample_truncation)), averaged);
    xgrad::write_image_grid(path, images.value(), 28, 28, kWalkSteps, 2, scale);
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

bool write_samples(Gan& gan, const SampleRequest& request, const std::string& path, const std::atomic<bool>& interrupted) {
    constexpr std::size_t kBatch = 256;
    const std::size_t n = request.count, classes = gan.config().classes;
    xgrad::Rng rng(request.seed);
    xgrad::IdxImagesWriter out(path, n, 28, 28);
    std::vector<std::uint8_t> pixels, labels;
    for (std::size_t done = 0; done < n;) {
        if (interrupted) return false;
        const std::size_t rows = std::min(kBatch, n - done);
        Var noise(Tensor::from_shape({rows, gan.config().noise_dim()}));
        draw_noise(rng, noise.mutable_value(), gan.config().sample_truncation);
        for (std::size_t r = 0; r < rows && classes > 0; ++r) {
            labels.push_back(static_cast<std::uint8_t>(request.digit ? *request.digit : (done + r) % classes));
            set_class(noise.mutable_value(), r, classes, labels.back());
        }
        const Var images = gan.generate(noise, request.averaged);
        pixels.clear();
        for (float x : images.value()) pixels.push_back(xgrad::pixel_byte(x));
        out.append(pixels.data(), rows);
        done += rows;
    }
    if (classes > 0) xgrad::write_idx_labels(labels_path(path), labels);
    out.commit();
    return true;
}

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

std::string csv_row(long step, const std::vector<float>& row) {
    std::ostringstream s;
    s << step;
    for (std::size_t c = 1; c < row.size(); ++c) s << "," << row[c];
    s << "\n";
    return s.str();
}

std::unique_ptr<common::TextFile> open_csv(const std::string& path, const std::string& header, const History& rows) {
    auto file = std::make_unique<common::TextFile>(path, common::TextFile::Mode::truncate);
    std::string text = header + "\n";
    for (const auto& row : rows.rows()) text += csv_row(long(row[0]), row);
    file->write(text);
    return file;
}

OutputDirectory::OutputDirectory(const std::string& dir) {
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

OutputDirectory::~OutputDirectory() { ::close(fd_); }

QuietUnlessRoot::QuietUnlessRoot(bool root) : saved_(root ? nullptr : std::cerr.rdbuf(nullptr)) {}
QuietUnlessRoot::~QuietUnlessRoot() {
    if (!saved_) return;
    std::cerr.rdbuf(saved_);
    std::cerr.clear();
}

}  // namespace gan
