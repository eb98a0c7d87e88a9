#include "evaluation.hpp"

#include <stdexcept>

namespace quality {

using xgrad::Tensor;

Tensor image_rows(const xgrad::IdxImages& images, std::size_t first, std::size_t count) {
    std::vector<std::size_t> indices(count);
    for (std::size_t i = 0; i < count; ++i) indices[i] = first + i;
    Tensor out = Tensor::from_shape({count, images.rows * images.cols});
    xgrad::copy_images(images, indices.data(), count, out);
    return out;
}

HeldOut split_held_out(const xgrad::IdxImages& images) {
    if (images.count < 8) {
        throw std::runtime_error("the held-out split has " + std::to_string(images.count) +
                                 " images; the evaluation needs at least 8");
    }
    const std::size_t half = images.count / 2, quarter = (images.count - half) / 2;
    return {image_rows(images, 0, half), image_rows(images, half, images.count - half), image_rows(images, half, quarter),
            image_rows(images, half + quarter, images.count - half - quarter)};
}

SampleEvaluator::SampleEvaluator(Classifier& classifier, const Tensor& reference)
    : classifier_(classifier), reference_(fit_gaussian(classifier.evaluate(reference).features)) {}

QuickMetrics SampleEvaluator::evaluate(const Tensor& samples) {
    const Classifier::Outputs out = classifier_.evaluate(samples);
    QuickMetrics m;
    m.score = classifier_score(out.probabilities);
    m.coverage = class_coverage(predicted_labels(out.probabilities), classifier_.config().classes);
    m.fid = frechet_distance(fit_gaussian(out.features), reference_);
    return m;
}

}  // namespace quality
