// Differentiable augmentation (lib/xgrad/nn/augment.hpp): each transform
// does what it says to each image, draws are fixed by the seed, nothing
// changes where the policy or the probability says so, and the whole
// augmentation is differentiable twice (gradcheck and gradgradcheck).
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include <xgrad/nn/augment.hpp>
#include <xgrad/ops.hpp>

#include "op_reference.hpp"

namespace {

using test::check_gradients;
using test::random_var;
using xgrad::AugmentPolicy;
using xgrad::DiffAugment;
using xgrad::Shape;
using xgrad::Tensor;
using xgrad::Var;

AugmentPolicy policy(const std::string& text, float probability = 1.f) {
    AugmentPolicy p = xgrad::parse_augment_policy(text);
    p.probability = probability;
    return p;
}

TEST_CASE("augmentation policies parse, print and refuse unknown parts") {
    CHECK(xgrad::augment_policy_text(policy("translation,cutout")) == "translation,cutout");
    CHECK(xgrad::augment_policy_text(policy("color,translation,cutout")) == "translation,cutout,color");
    CHECK_FALSE(policy("none").any());
    CHECK_FALSE(policy("").any());
    CHECK_THROWS_WITH_AS(xgrad::parse_augment_policy("translation,flip"), doctest::Contains("unknown part 'flip'"),
                         std::invalid_argument);
    AugmentPolicy bad = policy("cutout");
    bad.cutout_ratio = 0.f;
    CHECK_THROWS_WITH_AS(DiffAugment(bad, 1), doctest::Contains("cutout_ratio 0"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(DiffAugment(policy("cutout", 1.5f), 1), doctest::Contains("probability 1.5"), std::invalid_argument);
    DiffAugment augment(policy("translation"), 1);
    CHECK_THROWS_WITH_AS(augment(Var::zeros({4, 784})), doctest::Contains("expected an (N, C, H, W) batch, got (4, 784)"),
                         xgrad::ShapeError);
}

TEST_CASE("translation moves each image by at most its ratio, zeros moving in; cutout zeroes one square") {
    const Var x = Var::full({6, 1, 16, 16}, 1.f);
    DiffAugment translation(policy("translation"), 3);
    const Tensor moved = translation(x).value();
    for (std::size_t n = 0; n < 6; ++n) {
        // With ones everywhere the ones left are (16 - |dy|) (16 - |dx|), |d| <= 2.
        double ones = 0;
        for (std::size_t k = 0; k < 256; ++k) ones += moved.data()[n * 256 + k];
        CHECK(ones >= 14.0 * 14.0);
        CHECK(ones <= 256.0);
    }
    DiffAugment cutout(policy("cutout"), 4);
    const Tensor cut = cutout(x).value();
    for (std::size_t n = 0; n < 6; ++n) {
        double zeros = 0;
        for (std::size_t k = 0; k < 256; ++k) zeros += cut.data()[n * 256 + k] == 0.f;
        CHECK(zeros >= 4.0 * 4.0);  // at least a quarter of the 8 x 8 square is inside the image
        CHECK(zeros <= 8.0 * 8.0);
    }
}

TEST_CASE("augmentation is fixed by its seed, and the identity where nothing is drawn") {
    const Var x = random_var({5, 2, 8, 8}, 0.f, 1.f, 1, false);
    DiffAugment a(policy("translation,cutout,color"), 7), b(policy("translation,cutout,color"), 7),
        c(policy("translation,cutout,color"), 8);
    const Tensor ya = a(x).value();
    CHECK(ya == b(x).value());
    CHECK(ya != c(x).value());
    CHECK(ya != x.value());
    DiffAugment never(policy("translation,cutout,color", 0.f), 7);
    const Tensor same = never(x).value();
    for (std::size_t k = 0; k < x.numel(); ++k) CHECK(same.data()[k] == doctest::Approx(x.value().data()[k]).epsilon(1e-6));
    DiffAugment none(policy("none"), 7);
    CHECK(none(x).value() == x.value());
}

TEST_CASE("colour keeps each image's mean shifted by its brightness only") {
    // Contrast scales around the image mean, so the mean after is the mean before plus the brightness.
    const Var x = random_var({4, 1, 6, 6}, 0.f, 1.f, 2, false);
    DiffAugment colour(policy("color"), 5);
    const Tensor y = colour(x).value();
    for (std::size_t n = 0; n < 4; ++n) {
        double before = 0, after = 0;
        for (std::size_t k = 0; k < 36; ++k) {
            before += x.value().data()[n * 36 + k];
            after += y.data()[n * 36 + k];
        }
        CHECK(std::abs(after - before) / 36 <= 0.5 + 1e-5);
    }
}

TEST_CASE("the whole augmentation is differentiable twice") {
    for (const std::string text : {"translation", "cutout", "color", "translation,cutout,color"}) {
        const Var x = random_var({3, 2, 6, 5}, -1.f, 1.f, 3);
        // The same draws at every evaluation: a fresh augmenter of one seed.
        check_gradients("DiffAugment " + text,
                        [text](const std::vector<Var>& in) { return DiffAugment(policy(text), 11)(in[0]); }, {x});
    }
}

}  // namespace
