// The sample-quality metrics of apps/quality on inputs whose answers are known
// in closed form, the classifier's weights file, the held-out split, and
// mnist_gan --classifier (which must not change what training does).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <xgrad.hpp>
#include <xgrad/core/archive.hpp>
#include <xgrad/core/random.hpp>
#include <xgrad/io/archive_file.hpp>
#include <xgrad/io/idx.hpp>
#include <xtensor/xmath.hpp>
#include "app_helpers.hpp"
#include "helpers.hpp"

#include "app.hpp"
#include "baselines.hpp"
#include "classifier.hpp"
#include "evaluation.hpp"
#include "metrics.hpp"

namespace {

namespace fs = std::filesystem;
using xgrad::Tensor;

constexpr double kPi = 3.14159265358979323846;

Tensor random_tensor(std::size_t rows, std::size_t cols, std::uint64_t seed, float lo = -1.f, float hi = 1.f) {
    Tensor t(xgrad::Shape{rows, cols});
    xgrad::Rng(seed).fill_uniform(t, lo, hi);
    return t;
}

quality::Gaussian gaussian(std::vector<double> mean, const std::vector<std::vector<double>>& covariance) {
    quality::Gaussian g;
    g.mean = xt::zeros<double>({mean.size()});
    g.covariance = quality::Matrix({mean.size(), mean.size()});
    for (std::size_t i = 0; i < mean.size(); ++i) {
        g.mean(i) = mean[i];
        for (std::size_t j = 0; j < mean.size(); ++j) g.covariance(i, j) = covariance[i][j];
    }
    return g;
}

quality::Gaussian diagonal(std::vector<double> mean, const std::vector<double>& variances) {
    std::vector<std::vector<double>> c(variances.size(), std::vector<double>(variances.size(), 0.0));
    for (std::size_t i = 0; i < variances.size(); ++i) c[i][i] = variances[i];
    return gaussian(std::move(mean), c);
}

// Q S Q^T for the rotation by `angle` in the plane of the first two axes.
quality::Gaussian rotated(const quality::Gaussian& g, double angle) {
    const std::size_t d = g.mean.size();
    quality::Matrix q = xt::eye<double>(d);
    q(0, 0) = q(1, 1) = std::cos(angle);
    q(0, 1) = -std::sin(angle);
    q(1, 0) = std::sin(angle);
    quality::Gaussian r;
    r.mean = xt::zeros<double>({d});
    r.covariance = quality::Matrix({d, d});
    for (std::size_t i = 0; i < d; ++i) {
        r.mean(i) = 0;
        for (std::size_t k = 0; k < d; ++k) r.mean(i) += q(i, k) * g.mean(k);
        for (std::size_t j = 0; j < d; ++j) {
            double s = 0;
            for (std::size_t k = 0; k < d; ++k)
                for (std::size_t l = 0; l < d; ++l) s += q(i, k) * g.covariance(k, l) * q(j, l);
            r.covariance(i, j) = s;
        }
    }
    return r;
}

}  // namespace

// ---- classifier score and coverage ------------------------------------------------------

TEST_CASE("classifier score: number of equally used classes for confident predictions, 1 for identical ones") {
    Tensor confident({50, 10}, 0.f);
    for (std::size_t i = 0; i < 50; ++i) confident(i, i % 10) = 1.f;
    CHECK(quality::classifier_score(confident) == doctest::Approx(10.0));

    Tensor two({4, 10}, 0.f);  // confident, but only classes 3 and 7
    for (std::size_t i = 0; i < 4; ++i) two(i, i % 2 ? 3 : 7) = 1.f;
    CHECK(quality::classifier_score(two) == doctest::Approx(2.0));

    Tensor identical = random_tensor(30, 10, 3, 0.f, 1.f);
    for (std::size_t i = 0; i < 30; ++i) {
        for (std::size_t c = 0; c < 10; ++c) identical(i, c) = identical(0, c);
    }
    CHECK(quality::classifier_score(identical) == doctest::Approx(1.0));

    // (0.9, 0.1) and (0.1, 0.9): p(y) = (1/2, 1/2), KL = 0.9 ln 1.8 + 0.1 ln 0.2 for both rows.
    const Tensor soft{{0.9f, 0.1f}, {0.1f, 0.9f}};
    CHECK(quality::classifier_score(soft) == doctest::Approx(std::exp(0.9 * std::log(1.8) + 0.1 * std::log(0.2))).epsilon(1e-6));
    CHECK_THROWS_AS(quality::classifier_score(Tensor::from_shape({0, 10})), std::invalid_argument);
}

TEST_CASE("class coverage: entropy in bits and the extreme class shares") {
    const quality::Coverage one = quality::class_coverage(std::vector<std::size_t>(40, 4), 10);
    CHECK(one.entropy_bits == doctest::Approx(0.0));
    CHECK(one.min_share == doctest::Approx(0.0));
    CHECK(one.max_share == doctest::Approx(1.0));
    CHECK(one.shares[4] == doctest::Approx(1.0));

    std::vector<std::size_t> uniform;
    for (std::size_t i = 0; i < 100; ++i) uniform.push_back(i % 10);
    const quality::Coverage all = quality::class_coverage(uniform, 10);
    CHECK(all.entropy_bits == doctest::Approx(std::log2(10.0)));
    CHECK(all.min_share == doctest::Approx(0.1));
    CHECK(all.max_share == doctest::Approx(0.1));

    const quality::Coverage skewed = quality::class_coverage({0, 0, 0, 1}, 2);  // shares 3/4, 1/4
    CHECK(skewed.entropy_bits == doctest::Approx(-(0.75 * std::log2(0.75) + 0.25 * std::log2(0.25))));
    CHECK(skewed.min_share == doctest::Approx(0.25));

    CHECK_THROWS_WITH_AS(quality::class_coverage({0, 10}, 10), doctest::Contains("label 10"), std::invalid_argument);
    CHECK_THROWS_AS(quality::class_coverage({}, 10), std::invalid_argument);
}

TEST_CASE("predicted labels are the most probable class, the first on ties") {
    const Tensor p{{0.1f, 0.7f, 0.2f}, {0.4f, 0.2f, 0.4f}, {0.f, 0.f, 1.f}};
    CHECK(quality::predicted_labels(p) == std::vector<std::size_t>{1, 0, 2});
}

// ---- Fréchet distance -------------------------------------------------------------------

TEST_CASE("requested-class accuracy: per class, the share of its requests classified as it") {
    const std::vector<std::size_t> predicted{0, 0, 1, 2, 2, 2, 1};
    const std::vector<std::uint8_t> requested{0, 0, 1, 1, 2, 2, 2};
    const auto per_class = quality::requested_class_accuracy(predicted, requested, 4);
    REQUIRE(per_class.size() == 4);
    CHECK(per_class[0].requested == 2);
    CHECK(per_class[0].accuracy == 1.0);
    CHECK(per_class[1].requested == 2);
    CHECK(per_class[1].accuracy == 0.5);  // one 1 taken for a 2
    CHECK(per_class[2].requested == 3);
    CHECK(per_class[2].accuracy == doctest::Approx(2.0 / 3));
    CHECK(per_class[3].requested == 0);
    CHECK(std::isnan(per_class[3].accuracy));  // never asked for
    CHECK_THROWS_WITH_AS(quality::requested_class_accuracy(predicted, {0, 1}, 4), doctest::Contains("2 requested labels for 7"),
                         std::invalid_argument);
    CHECK_THROWS_WITH_AS(quality::requested_class_accuracy({0}, {7}, 4), doctest::Contains("label 7"), std::invalid_argument);
}

TEST_CASE("Fréchet distance: 0 for identical feature sets") {
    const Tensor features = random_tensor(300, 12, 5);
    const quality::Gaussian g = quality::fit_gaussian(features);
    CHECK(quality::frechet_distance(g, g) < 1e-9);
    // Fewer samples than dimensions: singular covariances still give 0.
    const quality::Gaussian singular = quality::fit_gaussian(random_tensor(5, 12, 6));
    CHECK(quality::frechet_distance(singular, singular) < 1e-9);
}

TEST_CASE("Fréchet distance matches the closed forms") {
    SUBCASE("diagonal covariances: sum (mu1-mu2)^2 + sum (s1 + s2 - 2 sqrt(s1 s2))") {
        const std::vector<double> m1{0.5, -1, 2, 0}, m2{1.5, 1, 2, -0.25}, s1{1, 4, 0.25, 0}, s2{9, 1, 0.25, 2};
        double want = 0;
        for (std::size_t i = 0; i < 4; ++i) {
            want += (m1[i] - m2[i]) * (m1[i] - m2[i]) + s1[i] + s2[i] - 2 * std::sqrt(s1[i] * s2[i]);
        }
        const quality::Gaussian a = diagonal(m1, s1), b = diagonal(m2, s2);
        CHECK(quality::frechet_distance(a, b) == doctest::Approx(want).epsilon(1e-10));
        CHECK(quality::frechet_distance(b, a) == doctest::Approx(want).epsilon(1e-10));
        // A rotation of both leaves the distance unchanged (and makes the covariances non-diagonal).
        CHECK(quality::frechet_distance(rotated(a, 0.7), rotated(b, 0.7)) == doctest::Approx(want).epsilon(1e-9));
    }
    SUBCASE("non-commuting 2x2 covariances: Tr sqrt(S1 S2) = sqrt(Tr(S1 S2) + 2 sqrt(det S1 det S2))") {
        const quality::Gaussian a = gaussian({1, 2}, {{2, 0.5}, {0.5, 1}}), b = gaussian({0, 0}, {{1, -0.3}, {-0.3, 3}});
        const double tr_s1s2 = 2 * 1 + 0.5 * -0.3 + 0.5 * -0.3 + 1 * 3;
        const double det1 = 2 * 1 - 0.25, det2 = 3 - 0.09;
        const double want = 1 + 4 + (2 + 1) + (1 + 3) - 2 * std::sqrt(tr_s1s2 + 2 * std::sqrt(det1 * det2));
        CHECK(quality::frechet_distance(a, b) == doctest::Approx(want).epsilon(1e-10));
    }
    SUBCASE("one dimension: (mu1-mu2)^2 + (sigma1-sigma2)^2") {
        CHECK(quality::frechet_distance(diagonal({3}, {4}), diagonal({1}, {9})) == doctest::Approx(4.0 + 1.0));
    }
    CHECK_THROWS_AS(quality::frechet_distance(diagonal({0, 0}, {1, 1}), diagonal({0}, {1})), std::invalid_argument);
}

TEST_CASE("fit_gaussian: mean and unbiased covariance") {
    const Tensor x{{1.f, 2.f}, {3.f, 2.f}, {5.f, 8.f}};
    const quality::Gaussian g = quality::fit_gaussian(x);
    CHECK(g.mean(0) == doctest::Approx(3.0));
    CHECK(g.mean(1) == doctest::Approx(4.0));
    CHECK(g.covariance(0, 0) == doctest::Approx(4.0));   // (4 + 0 + 4) / 2
    CHECK(g.covariance(1, 1) == doctest::Approx(12.0));  // (4 + 4 + 16) / 2
    CHECK(g.covariance(0, 1) == doctest::Approx(6.0));   // (4 + 0 + 8) / 2
    CHECK(g.covariance(1, 0) == doctest::Approx(6.0));
    CHECK_THROWS_WITH_AS(quality::fit_gaussian(Tensor({1, 2}, 0.f)), doctest::Contains("at least 2"), std::invalid_argument);
}

// ---- nearest neighbours -----------------------------------------------------------------

TEST_CASE("nearest-neighbour distances on a hand-made set") {
    const Tensor references{{0.f, 0.f}, {3.f, 4.f}, {10.f, 0.f}};
    const Tensor queries{{0.f, 1.f}, {3.f, 4.f}, {9.f, 0.5f}, {6.f, 8.f}};
    const std::vector<double> d = quality::nearest_neighbour_distances(queries, references);
    REQUIRE(d.size() == 4);
    CHECK(d[0] == doctest::Approx(1.0));
    CHECK(d[1] == 0.0);  // an exact copy is exactly 0
    CHECK(d[2] == doctest::Approx(std::sqrt(1.25)));
    CHECK(d[3] == doctest::Approx(5.0));

    // Copies of random 784-pixel images are exactly 0 away, not the rounding
    // noise of |q|^2 + |r|^2 - 2 q.r: a memorising generator must show as such.
    const Tensor images = random_tensor(20, 784, 13, 0.f, 1.f);
    for (double copy : quality::nearest_neighbour_distances(images, images)) CHECK(copy == 0.0);
    CHECK_THROWS_AS(quality::nearest_neighbour_distances(queries, Tensor({2, 3}, 0.f)), std::invalid_argument);
}

TEST_CASE("nearest-neighbour distances agree with brute force over several distance blocks") {
    const Tensor q = random_tensor(600, 5, 11), r = random_tensor(70, 5, 12);  // 600 rows: three blocks of 256
    const std::vector<double> d = quality::nearest_neighbour_distances(q, r);
    for (std::size_t i = 0; i < 600; i += 37) {
        double best = HUGE_VAL;
        for (std::size_t j = 0; j < 70; ++j) {
            double s = 0;
            for (std::size_t c = 0; c < 5; ++c) s += (double(q(i, c)) - r(j, c)) * (double(q(i, c)) - r(j, c));
            best = std::min(best, std::sqrt(s));
        }
        CHECK(d[i] == doctest::Approx(best).epsilon(1e-12));
    }
}

// ---- Parzen window ----------------------------------------------------------------------

TEST_CASE("Parzen log-likelihood of a tiny known case") {
    const double sigma = 0.5;
    // One center: the Gaussian log-density itself.
    const Tensor center{{0.f, 0.f}};
    const Tensor points{{0.f, 0.f}, {1.f, 2.f}};
    const std::vector<double> ll = quality::parzen_log_likelihoods(center, points, sigma);
    const double norm = -std::log(2 * kPi * sigma * sigma);  // -(d/2) log(2 pi sigma^2), d = 2
    CHECK(ll[0] == doctest::Approx(norm));
    CHECK(ll[1] == doctest::Approx(norm - 5.0 / (2 * sigma * sigma)));

    // Two centers: the log of the mean of the two densities.
    const Tensor centers{{0.f, 0.f}, {1.f, 0.f}};
    const double at_first = std::log(0.5 * (1.0 + std::exp(-1.0 / (2 * sigma * sigma)))) + norm;
    CHECK(quality::parzen_log_likelihoods(centers, center, sigma)[0] == doctest::Approx(at_first));

    // Far from every center: exp underflows, the result must not.
    const Tensor far{{100.f, 0.f}};
    const double far_ll = quality::parzen_log_likelihoods(center, far, 0.05)[0];
    CHECK(std::isfinite(far_ll));
    CHECK(far_ll == doctest::Approx(-10000.0 / (2 * 0.05 * 0.05) - std::log(2 * kPi * 0.05 * 0.05)));
}

TEST_CASE("Parzen window picks the maximum-likelihood sigma on the validation points") {
    // One center at 0 in 1-D: the validation log-likelihood is maximised at sigma^2 = mean(x^2) = 4.
    const Tensor center = test::matrix({{0.f}});
    const Tensor validation = test::matrix({{1.f}, {-1.f}, {3.f}, {-1.f}, {1.f}, {3.f}});  // mean x^2 = (1+1+9+1+1+9)/6 = 11/3
    const Tensor test = test::matrix({{0.5f}, {-2.f}});
    const std::vector<double> sigmas{1.0, 1.5, std::sqrt(11.0 / 3.0), 2.5, 3.0};
    const quality::ParzenEstimate e = quality::parzen_window(center, validation, test, sigmas);
    CHECK(e.sigma == doctest::Approx(std::sqrt(11.0 / 3.0)));
    CHECK_FALSE(e.sigma_at_grid_edge);
    const double s2 = 11.0 / 3.0, norm = -0.5 * std::log(2 * kPi * s2);
    const double t0 = norm - 0.25 / (2 * s2), t1 = norm - 4.0 / (2 * s2);
    CHECK(e.mean == doctest::Approx((t0 + t1) / 2));
    CHECK(e.standard_error == doctest::Approx(std::abs(t0 - t1) / 2));  // sd/sqrt(n) for n = 2
    CHECK(e.validation_mean == doctest::Approx(norm - 0.5));            // -mean(x^2)/(2 sigma^2) = -1/2

    CHECK(quality::parzen_window(center, validation, test, {0.1, 0.2}).sigma_at_grid_edge);
    const std::vector<double> grid = quality::default_parzen_sigmas();
    CHECK(grid.front() == doctest::Approx(0.05));
    CHECK(grid.back() == doctest::Approx(2.0));
}

// ---- the classifier's weights file and the held-out split --------------------------------

TEST_CASE("a saved classifier loads back with the same outputs; evaluation mode is deterministic") {
    quality::ClassifierConfig c;
    c.inputs = 6;
    c.hidden = 5;
    c.classes = 3;
    c.dropout = 0.5f;
    quality::Classifier trained(c, 7);
    const Tensor images = random_tensor(9, 6, 8, 0.f, 1.f);
    const std::string before = trained.rng().state();
    const quality::Classifier::Outputs a = trained.evaluate(images, 4);  // 3 batches, the last partial
    CHECK(trained.rng().state() == before);                              // dropout is off: no draws
    CHECK(trained.evaluate(images, 4).probabilities == a.probabilities);
    // Other batch sizes run other BLAS kernels: equal up to rounding.
    CHECK(xt::allclose(trained.evaluate(images).probabilities, a.probabilities, 1e-5, 1e-6));
    REQUIRE(a.features.shape()[1] == 5);
    for (std::size_t i = 0; i < 9; ++i) {
        CHECK(a.probabilities(i, 0) + a.probabilities(i, 1) + a.probabilities(i, 2) == doctest::Approx(1.f));
    }

    const fs::path path = fs::temp_directory_path() / "xgrad_test_classifier.xgrad";
    trained.save(path.string(), "a note");
    const std::unique_ptr<quality::Classifier> loaded = quality::Classifier::load(path.string());
    CHECK(loaded->config().architecture() == c.architecture());
    CHECK(loaded->note() == "a note");
    const quality::Classifier::Outputs b = loaded->evaluate(images, 4);
    CHECK(b.probabilities == a.probabilities);
    CHECK(b.features == a.features);

    xgrad::Archive other;
    other.put("x", Tensor({1, 1}, 0.f));
    xgrad::write_archive(path.string(), other);
    CHECK_THROWS_WITH_AS(quality::Classifier::load(path.string()), doctest::Contains("holds no classifier"), std::runtime_error);
    fs::remove(path);
    CHECK_THROWS_AS(trained.evaluate(Tensor({2, 7}, 0.f)), xgrad::ShapeError);
}

TEST_CASE("the held-out split: disjoint halves, the reference cut for Parzen validation and test") {
    xgrad::IdxImages images;
    images.count = 10;
    images.rows = images.cols = 2;
    for (std::size_t i = 0; i < 10; ++i) images.pixels.insert(images.pixels.end(), 4, static_cast<std::uint8_t>(i * 10));
    const quality::HeldOut h = quality::split_held_out(images);
    const auto ids = [](const Tensor& t) {
        std::vector<int> out;
        for (std::size_t r = 0; r < t.shape()[0]; ++r) out.push_back(int(std::lround(t(r, 0) * 255.f / 10.f)));
        return out;
    };
    CHECK(ids(h.real_samples) == std::vector<int>{0, 1, 2, 3, 4});
    CHECK(ids(h.reference) == std::vector<int>{5, 6, 7, 8, 9});
    CHECK(ids(h.parzen_validation) == std::vector<int>{5, 6});
    CHECK(ids(h.parzen_test) == std::vector<int>{7, 8, 9});
    images.count = 7;
    images.pixels.resize(7 * 4);
    CHECK_THROWS_WITH_AS(quality::split_held_out(images), doctest::Contains("at least 8"), std::runtime_error);
}

TEST_CASE("the sample evaluator scores its own reference with FID 0") {
    quality::ClassifierConfig c;
    c.inputs = 16;
    c.hidden = 6;
    c.classes = 4;
    quality::Classifier classifier(c, 3);
    const Tensor reference = random_tensor(40, 16, 9, 0.f, 1.f);
    quality::SampleEvaluator evaluator(classifier, reference);
    const quality::QuickMetrics same = evaluator.evaluate(reference);
    CHECK(same.fid < 1e-6);
    CHECK(same.score >= 1.0);
    CHECK(same.score <= 4.0);
    CHECK(evaluator.evaluate(random_tensor(40, 16, 10, 0.5f, 1.5f)).fid > 1e-3);
}

// ---- mnist_gan --classifier ---------------------------------------------------------------

namespace {

int run_gan(const fs::path& data, const fs::path& out, long steps, std::vector<std::string> extra) {
    auto args = test::tiny_run(data, out, steps);
    args.insert(args.end(), {"--grid-every", "0", "--checkpoint-every", "2", "--log-every", "1"});
    args.insert(args.end(), extra.begin(), extra.end());
    return test::run_mnist_gan(args);
}

bool same_tensor(const xgrad::Archive& a, const xgrad::Archive& b, const std::string& name) {
    const Tensor &x = a.tensor(name), &y = b.tensor(name);
    return x.shape() == y.shape() && std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) == 0;
}

}  // namespace

TEST_CASE("mnist_gan --classifier measures quality without changing training, and resumes exactly") {
    test::TempDir dir;
    test::write_random_split(dir.path(), "train", 30, 1);
    test::write_random_split(dir.path(), "t10k", 20, 2);
    quality::ClassifierConfig c;
    c.hidden = 8;
    const std::string classifier = (dir.path() / "classifier.xgrad").string();
    quality::Classifier(c, 4).save(classifier);

    REQUIRE(run_gan(dir.path(), dir.path() / "plain", 4, {}) == 0);
    REQUIRE(run_gan(dir.path(), dir.path() / "measured", 4, {"--classifier", classifier, "--eval-every", "2"}) == 0);
    const std::vector<std::string> csv = test::lines_of(dir.path() / "measured" / "eval.csv");
    REQUIRE(csv.size() == 3);  // header, steps 2 and 4
    CHECK(csv[0] ==
          "step,classifier_score,coverage_bits,min_share,max_share,fid,"
          "averaged_classifier_score,averaged_coverage_bits,averaged_min_share,averaged_max_share,averaged_fid");
    CHECK(csv[1].rfind("2,", 0) == 0);
    CHECK(csv[2].rfind("4,", 0) == 0);
    CHECK(fs::exists(dir.path() / "measured" / "eval.png"));
    CHECK(fs::exists(dir.path() / "measured" / "eval_fid.png"));

    const auto plain = xgrad::read_archive((dir.path() / "plain" / "checkpoint.xgrad").string());
    const auto measured = xgrad::read_archive((dir.path() / "measured" / "checkpoint.xgrad").string());
    for (const char* name : {"generator.0.weight", "generator.2.bias", "discriminator.0.weight", "d_optimizer.v.3"}) {
        CAPTURE(name);
        CHECK(same_tensor(plain, measured, name));
    }
    CHECK(plain.text("rng") == measured.text("rng"));
    CHECK_FALSE(plain.contains("quality"));
    CHECK(measured.tensor("quality").shape()[0] == 2);

    // 2 steps, then resumed to 4: the same weights and the same quality rows.
    REQUIRE(run_gan(dir.path(), dir.path() / "split", 2, {"--classifier", classifier, "--eval-every", "2"}) == 0);
    REQUIRE(run_gan(dir.path(), dir.path() / "split", 4, {"--classifier", classifier, "--eval-every", "2", "--resume"}) == 0);
    const auto split = xgrad::read_archive((dir.path() / "split" / "checkpoint.xgrad").string());
    CHECK(same_tensor(measured, split, "generator.0.weight"));
    CHECK(same_tensor(measured, split, "quality"));
    CHECK(test::lines_of(dir.path() / "split" / "eval.csv") == csv);

    // --eval-every needs --classifier; a missing classifier file is refused up front.
    CHECK(run_gan(dir.path(), dir.path() / "bad", 2, {"--eval-every", "2"}) != 0);
    CHECK(run_gan(dir.path(), dir.path() / "bad", 2, {"--classifier", (dir.path() / "missing.xgrad").string()}) != 0);
}

namespace {

using xgrad::Shape;
using xgrad::Var;

// Ten synthetic "digits": each class a fixed random arrangement of bright
// bars on a 28 x 28 canvas, each sample its class pattern shifted by up to
// two pixels, with pixel noise.
struct SyntheticDigits {
    Tensor images;
    std::vector<std::uint8_t> labels;
};

SyntheticDigits synthetic_digits(std::size_t n, std::uint64_t seed) {
    xgrad::Rng pattern_rng(99), rng(seed);
    std::vector<Tensor> patterns;
    for (int c = 0; c < 10; ++c) {
        Tensor p(Shape{28, 28}, 0.f);
        for (int bar = 0; bar < 3; ++bar) {
            const std::size_t r = 4 + pattern_rng.below(20), col = 4 + pattern_rng.below(20);
            const bool across = pattern_rng.below(2) == 0;
            for (std::size_t k = 0; k < 8; ++k)
                p(std::min<std::size_t>(across ? r : r - 4 + k, 27), std::min<std::size_t>(across ? col - 4 + k : col, 27)) = 1.f;
        }
        patterns.push_back(p);
    }
    SyntheticDigits d{Tensor(Shape{n, 784}, 0.f), {}};
    for (std::size_t i = 0; i < n; ++i) {
        const auto c = static_cast<std::uint8_t>(rng.below(10));
        d.labels.push_back(c);
        const long dx = long(rng.below(5)) - 2, dy = long(rng.below(5)) - 2;
        for (long y = 0; y < 28; ++y) {
            for (long x = 0; x < 28; ++x) {
                const long sy = y - dy, sx = x - dx;
                const float v = sy >= 0 && sy < 28 && sx >= 0 && sx < 28 ? patterns[c](std::size_t(sy), std::size_t(sx)) : 0.f;
                d.images(i, std::size_t(y * 28 + x)) = std::clamp(v + rng.uniform(-0.2f, 0.2f), 0.f, 1.f);
            }
        }
    }
    return d;
}

}  // namespace

TEST_CASE("the CNN classifier learns synthetic digits in a few hundred steps") {
    quality::ClassifierConfig c;
    c.arch = quality::ClassifierArch::cnn;
    c.conv1 = 4;
    c.conv2 = 8;
    c.hidden = 32;
    c.dropout = 0.1f;
    quality::Classifier classifier(c, 3);
    const SyntheticDigits train = synthetic_digits(512, 1), test = synthetic_digits(200, 2);
    const double before = quality::accuracy(classifier.evaluate(test.images).probabilities, test.labels);
    xgrad::Adam adam(classifier.parameters(), xgrad::AdamOptions{3e-3f});
    Var x(Tensor(Shape{32, 784}, 0.f)), targets(Tensor(Shape{32, 10}, 0.f));
    classifier.train(true);
    for (std::size_t step = 0; step < 160; ++step) {
        targets.mutable_value().fill(0.f);
        for (std::size_t r = 0; r < 32; ++r) {
            const std::size_t i = (step * 32 + r) % 512;
            std::copy_n(&train.images(i, 0), 784, &x.mutable_value()(r, 0));
            targets.mutable_value()(r, train.labels[i]) = 1.f;
        }
        const Var loss = xgrad::softmax_cross_entropy(classifier.logits(x), targets);
        adam.zero_grad();
        xgrad::backward(loss);
        adam.step();
    }
    const double after = quality::accuracy(classifier.evaluate(test.images).probabilities, test.labels);
    INFO("accuracy before " << before << ", after " << after);
    CHECK(before < 0.3);
    CHECK(after > 0.9);
    CHECK(classifier.evaluate(test.images).features.shape() == Shape{200, 32});

    // The architecture text round-trips through a weights file.
    test::TempDir dir;
    classifier.save(dir.file("cnn.xgrad"));
    const auto loaded = quality::Classifier::load(dir.file("cnn.xgrad"));
    CHECK(loaded->config().architecture() == c.architecture());
    CHECK(loaded->evaluate(test.images).probabilities == classifier.evaluate(test.images).probabilities);
}

TEST_CASE("the classifier's head starts as the calibration measured it: Xavier-uniform weights, zero bias") {
    // docs/evaluation.md's FIDs depend on the classifier's features, and a
    // head drawn by another init (Linear's default) trains features that
    // score the calibration rows up to 3x higher.
    quality::ClassifierConfig c;
    c.arch = quality::ClassifierArch::cnn;
    quality::Classifier classifier(c, 1);
    const std::vector<Var> p = classifier.parameters();
    const Tensor& weight = p[p.size() - 2].value();
    const Tensor& bias = p.back().value();
    REQUIRE(weight.shape() == Shape{c.classes, c.hidden});
    CHECK(xt::all(xt::equal(bias, 0.f)));
    const float bound = std::sqrt(6.f / float(c.hidden + c.classes));
    const float largest = xt::amax(xt::abs(weight))();
    CHECK(largest <= bound);
    CHECK(largest > 0.95f * bound);  // uniform over the whole range, not a narrower one
}

TEST_CASE("calibration baselines: blur, pair averages, class means, half the classes") {
    // A single bright pixel blurred by 1 px: the normalised Gaussian, its
    // peak exp(0)/sum and a neighbour exp(-1/2) times as bright.
    // (Far enough from the border that no tap is dropped.)
    Tensor delta(Shape{1, 121}, 0.f);
    delta(0, 60) = 1.f;  // the middle of 11 x 11
    const Tensor blur = quality::blurred(delta, 11, 1.0);
    double total = 0;
    for (float v : blur) total += v;
    CHECK(total == doctest::Approx(1.0).epsilon(1e-6));
    CHECK(blur(0, 61) / blur(0, 60) == doctest::Approx(std::exp(-0.5)).epsilon(1e-5));
    CHECK(blur(0, 60 + 11 + 1) / blur(0, 60) == doctest::Approx(std::exp(-1.0)).epsilon(1e-5));
    // A constant image stays constant, borders included (renormalised taps).
    const Tensor flat = quality::blurred(Tensor(Shape{1, 49}, 0.5f), 7, 1.0);
    for (float v : flat) CHECK(v == doctest::Approx(0.5f));

    const Tensor images{{0.f, 1.f}, {1.f, 1.f}, {0.5f, 0.f}};
    const Tensor pairs = quality::pair_averages(images);
    CHECK(pairs(0, 0) == 0.5f);
    CHECK(pairs(2, 1) == 0.5f);  // image 2 with image 0
    const std::vector<std::uint8_t> labels{3, 1, 3};
    const Tensor means = quality::class_means(images, labels, 5);
    CHECK(means(0, 0) == 0.25f);
    CHECK(means(2, 1) == 0.5f);
    CHECK(means(1, 0) == 1.f);
    const Tensor half = quality::classes_below(images, labels, 2);
    REQUIRE(half.shape() == Shape{1, 2});
    CHECK(half(0, 0) == 1.f);
    CHECK_THROWS_AS(quality::class_means(images, {1, 2}), std::invalid_argument);
}
