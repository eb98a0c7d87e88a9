#include "metrics.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include <xtensor-blas/xlinalg.hpp>
#include <xtensor/xview.hpp>

namespace quality {

using xgrad::Tensor;

namespace {

constexpr double kPi = 3.14159265358979323846;

Matrix rows_to_double(const Tensor& t, std::size_t first, std::size_t count) {
    const std::size_t cols = t.shape()[1];
    Matrix m({count, cols});
    std::copy(t.data() + first * cols, t.data() + (first + count) * cols, m.data());
    return m;
}

Vector squared_row_norms(const Matrix& m) {
    Vector n = xt::zeros<double>({m.shape()[0]});
    for (std::size_t r = 0; r < m.shape()[0]; ++r) {
        for (std::size_t c = 0; c < m.shape()[1]; ++c) n(r) += m(r, c) * m(r, c);
    }
    return n;
}

void check_columns(const char* what, const Tensor& a, const Tensor& b) {
    if (a.shape()[1] != b.shape()[1]) {
        throw std::invalid_argument(std::string("quality::") + what + ": rows of " + std::to_string(a.shape()[1]) + " and " +
                                    std::to_string(b.shape()[1]) + " values cannot be compared");
    }
    if (b.shape()[0] == 0) throw std::invalid_argument(std::string("quality::") + what + ": no reference rows");
}

// Calls visit(first_query, d) with d(i, j) = ||q_{first+i} - r_j||^2 for
// blocks of query rows: |q|^2 + |r|^2 - 2 q.r with one dgemm per block, so
// the whole matrix (which for 10^4 x 10^4 would take 800 MB) never exists.
template <class Visit>
void for_each_distance_block(const Tensor& queries, const Tensor& references, Visit&& visit) {
    const Matrix r = rows_to_double(references, 0, references.shape()[0]);
    const Vector r_norms = squared_row_norms(r);
    constexpr std::size_t kBlock = 256;
    Matrix d;
    for (std::size_t first = 0; first < queries.shape()[0]; first += kBlock) {
        const std::size_t n = std::min(kBlock, queries.shape()[0] - first);
        const Matrix q = rows_to_double(queries, first, n);
        const Vector q_norms = squared_row_norms(q);
        d.resize({n, r.shape()[0]});
        xt::blas::gemm(q, r, d, false, true, -2.0, 0.0);
        for (std::size_t i = 0; i < n; ++i) {
            for (std::size_t j = 0; j < r.shape()[0]; ++j) d(i, j) = std::max(0.0, d(i, j) + q_norms(i) + r_norms(j));
        }
        visit(first, d);
    }
}

// log mean_j N(x; c_j, sigma^2 I) for one row of squared distances, with the
// closest center factored out so that exp never underflows to log(0).
double log_kernel_mean(const double* d, std::size_t n, double d_min, double sigma, std::size_t dim) {
    const double inv = 1.0 / (2.0 * sigma * sigma);
    double s = 0;
    for (std::size_t j = 0; j < n; ++j) s += std::exp(-(d[j] - d_min) * inv);
    return -d_min * inv + std::log(s / double(n)) - 0.5 * double(dim) * std::log(2.0 * kPi * sigma * sigma);
}

double row_min(const Matrix& d, std::size_t i) {
    const double* row = &d(i, 0);
    return *std::min_element(row, row + d.shape()[1]);
}

Matrix symmetric_sqrt(const Matrix& s) {
    const auto eigen = xt::linalg::eigh(s);
    const auto& w = std::get<0>(eigen);
    Matrix v = std::get<1>(eigen);  // columns are eigenvectors
    // B = V diag(w^(1/4)) gives B B^T = V diag(w^(1/2)) V^T.
    for (std::size_t j = 0; j < v.shape()[1]; ++j) {
        const double f = std::pow(std::max(w(j), 0.0), 0.25);
        for (std::size_t i = 0; i < v.shape()[0]; ++i) v(i, j) *= f;
    }
    Matrix out({s.shape()[0], s.shape()[0]});
    xt::blas::gemm(v, v, out, false, true);
    return out;
}

}  // namespace

double classifier_score(const Tensor& probabilities) {
    const std::size_t n = probabilities.shape()[0], classes = probabilities.shape()[1];
    if (n == 0) throw std::invalid_argument("quality::classifier_score: no samples");
    std::vector<double> marginal(classes, 0.0);
    for (std::size_t i = 0; i < n; ++i) {
        for (std::size_t c = 0; c < classes; ++c) marginal[c] += probabilities(i, c) / double(n);
    }
    double kl = 0;
    for (std::size_t i = 0; i < n; ++i) {
        for (std::size_t c = 0; c < classes; ++c) {
            const double p = probabilities(i, c);
            if (p > 0) kl += p * (std::log(p) - std::log(marginal[c]));  // 0 log 0 = 0
        }
    }
    return std::exp(kl / double(n));
}

std::vector<std::size_t> predicted_labels(const Tensor& probabilities) {
    std::vector<std::size_t> labels(probabilities.shape()[0]);
    for (std::size_t i = 0; i < labels.size(); ++i) {
        const float* row = &probabilities(i, 0);
        labels[i] = static_cast<std::size_t>(std::max_element(row, row + probabilities.shape()[1]) - row);
    }
    return labels;
}

Coverage class_coverage(const std::vector<std::size_t>& labels, std::size_t classes) {
    if (labels.empty() || classes == 0) throw std::invalid_argument("quality::class_coverage: no labels or no classes");
    Coverage c;
    c.shares.assign(classes, 0.0);
    for (std::size_t label : labels) {
        if (label >= classes) {
            throw std::invalid_argument("quality::class_coverage: label " + std::to_string(label) + " is not below the " +
                                        std::to_string(classes) + " classes");
        }
        c.shares[label] += 1.0 / double(labels.size());
    }
    for (double s : c.shares) {
        if (s > 0) c.entropy_bits -= s * std::log2(s);
    }
    c.min_share = *std::min_element(c.shares.begin(), c.shares.end());
    c.max_share = *std::max_element(c.shares.begin(), c.shares.end());
    return c;
}

std::vector<RequestedClass> requested_class_accuracy(const std::vector<std::size_t>& predicted,
                                                     const std::vector<std::uint8_t>& requested, std::size_t classes) {
    if (predicted.size() != requested.size()) {
        throw std::invalid_argument("quality::requested_class_accuracy: " + std::to_string(requested.size()) +
                                    " requested labels for " + std::to_string(predicted.size()) + " samples");
    }
    std::vector<RequestedClass> out(classes);
    std::vector<std::size_t> right(classes, 0);
    for (std::size_t i = 0; i < predicted.size(); ++i) {
        if (requested[i] >= classes || predicted[i] >= classes) {
            throw std::invalid_argument("quality::requested_class_accuracy: label " +
                                        std::to_string(std::max<std::size_t>(requested[i], predicted[i])) + " is not below the " +
                                        std::to_string(classes) + " classes");
        }
        ++out[requested[i]].requested;
        right[requested[i]] += predicted[i] == requested[i] ? 1 : 0;
    }
    for (std::size_t c = 0; c < classes; ++c) {
        out[c].accuracy =
            out[c].requested == 0 ? std::numeric_limits<double>::quiet_NaN() : double(right[c]) / double(out[c].requested);
    }
    return out;
}

Gaussian fit_gaussian(const Tensor& features) {
    const std::size_t n = features.shape()[0], dim = features.shape()[1];
    if (n < 2) {
        throw std::invalid_argument("quality::fit_gaussian: a covariance needs at least 2 samples, got " + std::to_string(n));
    }
    Matrix x = rows_to_double(features, 0, n);
    Gaussian g;
    g.mean = xt::mean(x, {0}, xt::evaluation_strategy::immediate);
    for (std::size_t i = 0; i < n; ++i) {
        for (std::size_t j = 0; j < dim; ++j) x(i, j) -= g.mean(j);
    }
    g.covariance = Matrix({dim, dim});
    xt::blas::gemm(x, x, g.covariance, true, false, 1.0 / double(n - 1), 0.0);
    return g;
}

double frechet_distance(const Gaussian& a, const Gaussian& b) {
    const std::size_t dim = a.mean.size();
    if (b.mean.size() != dim || a.covariance.shape()[0] != dim || b.covariance.shape()[0] != dim) {
        throw std::invalid_argument("quality::frechet_distance: Gaussians of dimension " + std::to_string(dim) + " and " +
                                    std::to_string(b.mean.size()) + " cannot be compared");
    }
    const Matrix root_a = symmetric_sqrt(a.covariance);
    Matrix t({dim, dim}), m({dim, dim});
    xt::blas::gemm(root_a, b.covariance, t, false, false);
    xt::blas::gemm(t, root_a, m, false, false);
    const Matrix symmetric = 0.5 * (m + xt::transpose(m));  // only rounding breaks its symmetry
    const auto eigenvalues = xt::linalg::eigvalsh(symmetric);
    double trace_root = 0;
    for (double e : eigenvalues) trace_root += std::sqrt(std::max(e, 0.0));
    double d = 0;
    for (std::size_t i = 0; i < dim; ++i) {
        const double diff = a.mean(i) - b.mean(i);
        d += diff * diff + a.covariance(i, i) + b.covariance(i, i);
    }
    return std::max(0.0, d - 2.0 * trace_root);
}

std::vector<double> nearest_neighbour_distances(const Tensor& queries, const Tensor& references) {
    check_columns("nearest_neighbour_distances", queries, references);
    const std::size_t cols = queries.shape()[1];
    std::vector<double> out(queries.shape()[0]);
    for_each_distance_block(queries, references, [&](std::size_t first, const Matrix& d) {
        for (std::size_t i = 0; i < d.shape()[0]; ++i) {
            const double* row = &d(i, 0);
            const std::size_t j = static_cast<std::size_t>(std::min_element(row, row + d.shape()[1]) - row);
            // The expanded form can leave rounding noise for an exact copy
            // (its sums run in BLAS's order); recomputing the winner directly
            // makes a copy read exactly 0 on every machine.
            const float* q = &queries(first + i, 0);
            const float* r = &references(j, 0);
            double s = 0;
            for (std::size_t c = 0; c < cols; ++c) s += (double(q[c]) - r[c]) * (double(q[c]) - r[c]);
            out[first + i] = std::sqrt(s);
        }
    });
    return out;
}

std::vector<double> parzen_log_likelihoods(const Tensor& centers, const Tensor& points, double sigma) {
    check_columns("parzen_log_likelihoods", points, centers);
    if (!(sigma > 0)) throw std::invalid_argument("quality::parzen_log_likelihoods: sigma must be positive");
    std::vector<double> out(points.shape()[0]);
    for_each_distance_block(points, centers, [&](std::size_t first, const Matrix& d) {
        for (std::size_t i = 0; i < d.shape()[0]; ++i) {
            out[first + i] = log_kernel_mean(&d(i, 0), d.shape()[1], row_min(d, i), sigma, points.shape()[1]);
        }
    });
    return out;
}

ParzenEstimate parzen_window(const Tensor& centers, const Tensor& validation, const Tensor& test,
                             const std::vector<double>& sigmas) {
    check_columns("parzen_window", validation, centers);
    if (sigmas.empty() || validation.shape()[0] == 0 || test.shape()[0] == 0) {
        throw std::invalid_argument("quality::parzen_window: needs sigmas, validation points and test points");
    }
    // One distance pass serves every sigma.
    std::vector<double> totals(sigmas.size(), 0.0);
    for_each_distance_block(validation, centers, [&](std::size_t, const Matrix& d) {
        for (std::size_t i = 0; i < d.shape()[0]; ++i) {
            const double d_min = row_min(d, i);
            for (std::size_t s = 0; s < sigmas.size(); ++s) {
                totals[s] += log_kernel_mean(&d(i, 0), d.shape()[1], d_min, sigmas[s], validation.shape()[1]);
            }
        }
    });
    const std::size_t best = static_cast<std::size_t>(std::max_element(totals.begin(), totals.end()) - totals.begin());
    ParzenEstimate e;
    e.sigma = sigmas[best];
    e.validation_mean = totals[best] / double(validation.shape()[0]);
    e.sigma_at_grid_edge = sigmas.size() > 1 && (best == 0 || best + 1 == sigmas.size());
    const std::vector<double> ll = parzen_log_likelihoods(centers, test, e.sigma);
    e.mean = mean_of(ll);
    if (ll.size() > 1) {
        double ss = 0;
        for (double v : ll) ss += (v - e.mean) * (v - e.mean);
        e.standard_error = std::sqrt(ss / double(ll.size() - 1) / double(ll.size()));
    }
    return e;
}

std::vector<double> default_parzen_sigmas() {
    std::vector<double> s;
    const double lo = std::log(0.05), hi = std::log(2.0);
    for (int i = 0; i <= 40; ++i) s.push_back(std::exp(lo + (hi - lo) * i / 40.0));
    return s;
}

double mean_of(const std::vector<double>& values) {
    if (values.empty()) return std::numeric_limits<double>::quiet_NaN();
    double s = 0;
    for (double v : values) s += v;
    return s / double(values.size());
}

}  // namespace quality
