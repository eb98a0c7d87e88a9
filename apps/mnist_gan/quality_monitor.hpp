// mnist_gan --classifier: sample quality measured during training.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "evaluation.hpp"
#include "gan.hpp"

namespace gan {

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
    // Throws std::runtime_error naming a file it cannot read.
    QualityMonitor(const std::string& classifier_path, const std::string& data_dir, const GanConfig& config, std::uint64_t seed);
    // The raw generator's metrics, then the averaged one's (NaN without one).
    std::vector<float> measure(Gan& gan, long step);

private:
    std::unique_ptr<quality::Classifier> classifier_;
    quality::SampleEvaluator evaluator_;
    xgrad::Var noise_;
};

// eval.csv's columns, one per value of a QualityMonitor row.
constexpr const char* kEvalHeader =
    "step,classifier_score,coverage_bits,min_share,max_share,fid,"
    "averaged_classifier_score,averaged_coverage_bits,averaged_min_share,averaged_max_share,averaged_fid";

}  // namespace gan
