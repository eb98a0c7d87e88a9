// Sample-quality metrics for generative models, as plain functions of
// matrices (one sample per row); no model inside. docs/evaluation.md says how
// to read each one. Everything is computed in double precision.
//
// The classifier-based ones take the outputs of a trained classifier
// (classifier.hpp): class probabilities p(y|x) and penultimate-layer features.
// They are the Inception Score and FID of the literature with this small
// MNIST classifier in place of Inception, so their values are comparable only
// with each other, at equal sample counts.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include <xtensor/xtensor.hpp>

#include <xgrad/core/tensor.hpp>

namespace quality {

using Matrix = xt::xtensor<double, 2>;
using Vector = xt::xtensor<double, 1>;

// ---- the classifier's predictions ------------------------------------------------------

// exp(E_x KL(p(y|x) || p(y))), p(y) the mean of the rows of `probabilities`
// (n, classes): 1 when every sample gets the same prediction, `classes` when
// each is classified with certainty and the classes are equally frequent.
// Throws std::invalid_argument for no rows.
double classifier_score(const xgrad::Tensor& probabilities);

// The most probable class of each row (the first one on ties).
std::vector<std::size_t> predicted_labels(const xgrad::Tensor& probabilities);

// How the predicted labels spread over the classes: the mode-collapse alarm.
struct Coverage {
    std::vector<double> shares;  // fraction of samples per class, summing to 1
    double entropy_bits = 0;     // of `shares`; log2(classes) when uniform, 0 for a single class
    double min_share = 0, max_share = 0;
};
// Throws std::invalid_argument for no labels, no classes or a label >= classes.
Coverage class_coverage(const std::vector<std::size_t>& labels, std::size_t classes);

// A conditional generator's obedience: for each class, how many samples were
// asked to be of it and the share of those the classifier puts in it.
struct RequestedClass {
    std::size_t requested = 0;
    double accuracy = 0;  // NaN for a class never asked for
};
// Throws std::invalid_argument unless there is one requested label per
// prediction, every label below `classes`.
std::vector<RequestedClass> requested_class_accuracy(const std::vector<std::size_t>& predicted,
                                                     const std::vector<std::uint8_t>& requested, std::size_t classes);

// ---- Fréchet distance of feature statistics ---------------------------------------

struct Gaussian {
    Vector mean;
    Matrix covariance;  // unbiased (divides by n - 1)
};
// Mean and covariance of the rows of `features` (n, d); throws
// std::invalid_argument for fewer than 2 rows.
Gaussian fit_gaussian(const xgrad::Tensor& features);

// ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)). The trace of the square
// root is the sum of the square roots of the eigenvalues of the symmetric
// positive semi-definite S1^(1/2) S2 S1^(1/2) (similar to S1 S2), both from
// symmetric eigendecompositions, which stay real and stable for singular
// covariances (fewer samples than dimensions); eigenvalues that round below
// zero count as zero, and so does a total that rounds below zero.
// Throws std::invalid_argument when the dimensions differ.
double frechet_distance(const Gaussian& a, const Gaussian& b);

// ---- memorisation ---------------------------------------------------------------------

// For every row of `queries`, the Euclidean distance to the closest row of
// `references` (same number of columns; at least one reference row).
std::vector<double> nearest_neighbour_distances(const xgrad::Tensor& queries, const xgrad::Tensor& references);

// ---- Parzen-window log-likelihood (Goodfellow et al. 2014, Table 1) -------------------

// log p(x) under an isotropic Gaussian kernel of width sigma on every row of
// `centers`: log mean_i N(x; c_i, sigma^2 I), one value per row of `points`, nats.
std::vector<double> parzen_log_likelihoods(const xgrad::Tensor& centers, const xgrad::Tensor& points, double sigma);

struct ParzenEstimate {
    double sigma = 0;                 // chosen on the validation points
    double validation_mean = 0;       // mean log-likelihood of the validation points at that sigma
    double mean = 0;                  // mean log-likelihood of the test points, nats
    double standard_error = 0;        // of that mean, over the test points
    bool sigma_at_grid_edge = false;  // the best sigma was the smallest or largest tried
};
// Picks the sigma in `sigmas` that maximises the mean log-likelihood of the
// validation points, then evaluates the test points at that sigma.
ParzenEstimate parzen_window(const xgrad::Tensor& centers, const xgrad::Tensor& validation, const xgrad::Tensor& test,
                             const std::vector<double>& sigmas);
// 41 widths spaced evenly in log from 0.05 to 2 (pixel values in [0, 1]):
// wider than the paper's code (0.1 to 1) so that noise baselines find theirs.
std::vector<double> default_parzen_sigmas();

double mean_of(const std::vector<double>& values);

}  // namespace quality
