// The evaluation protocol shared by gan_eval and mnist_gan --classifier:
// which real images serve as what, and the quick metrics cheap enough to
// track during training.
#pragma once

#include <string>

#include <xgrad/io/idx.hpp>

#include "classifier.hpp"
#include "metrics.hpp"

namespace quality {

// Images [first, first+count) as rows of floats in [0, 1].
xgrad::Tensor image_rows(const xgrad::IdxImages& images, std::size_t first, std::size_t count);

// The held-out (t10k) split, cut in two fixed halves so that real images can
// be scored exactly like samples without being compared with themselves:
//   real_samples  the first half: the "real data" baseline (as if a generator
//                 reproduced the data distribution perfectly without copying);
//   reference     the second half: FID reference and nearest-neighbour
//                 baseline; its first half chooses the Parzen sigma
//                 (parzen_validation), its second half is the Parzen test set.
struct HeldOut {
    xgrad::Tensor real_samples, reference, parzen_validation, parzen_test;
};
// Throws std::runtime_error for fewer than 8 images.
HeldOut split_held_out(const xgrad::IdxImages& images);

// Classifier score, class coverage and FID against the reference: cheap
// enough (about 0.2 s for 1000 samples) to run during training.
struct QuickMetrics {
    double score = 0;
    Coverage coverage;
    double fid = 0;
};

class SampleEvaluator {
public:
    // Fits the reference Gaussian once; `classifier` must outlive this.
    SampleEvaluator(Classifier& classifier, const xgrad::Tensor& reference);
    QuickMetrics evaluate(const xgrad::Tensor& samples);
    Classifier& classifier() { return classifier_; }

private:
    Classifier& classifier_;
    Gaussian reference_;
};

}  // namespace quality
