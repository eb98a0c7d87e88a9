#include "quality_monitor.hpp"

#include <limits>

#include <xgrad/io/idx.hpp>
#include <xgrad/io/image.hpp>

#include "data_location.hpp"

namespace gan {

using xgrad::Tensor;

QualityMonitor::QualityMonitor(const std::string& classifier_path, const std::string& data_dir, const GanConfig& config,
                               std::uint64_t seed)
    : classifier_(quality::Classifier::load(classifier_path)),
      evaluator_(*classifier_,
                 quality::split_held_out(xgrad::read_idx_images(common::find_idx(data_dir, "t10k-images-idx3-ubyte"))).reference),
      noise_(Tensor::from_shape({kSamples, config.noise_dim()})) {
    xgrad::Rng rng(seed);
    draw_noise(rng, noise_.mutable_value(), config.sample_truncation);
    // A conditional GAN is asked for every class equally often.
    for (std::size_t i = 0; config.classes > 0 && i < kSamples; ++i)
        set_class(noise_.mutable_value(), i, config.classes, i % config.classes);
}

std::vector<float> QualityMonitor::measure(Gan& gan, long step) {
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

}  // namespace gan
