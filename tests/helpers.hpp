// What several test files need: temporary directories and the standard
// gradient check of an op.
#pragma once

#include <doctest/doctest.h>

#include <filesystem>
#include <functional>
#include <initializer_list>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

#include <unistd.h>

#include <xgrad/check/gradcheck.hpp>
#include <xgrad/core/random.hpp>

namespace test {

// A fresh directory under the system's temporary directory, unique per
// process and object, removed with everything in it.
class TempDir {
public:
    TempDir() {
        static int counter = 0;
        do {
            path_ = std::filesystem::temp_directory_path() /
                    ("xgrad-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
        } while (!std::filesystem::create_directory(path_));
    }
    ~TempDir() {
        std::error_code ignored;
        std::filesystem::remove_all(path_, ignored);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;

    const std::filesystem::path& path() const { return path_; }
    std::string file(const std::string& name) const { return (path_ / name).string(); }
    std::size_t entries() const {
        return static_cast<std::size_t>(
            std::distance(std::filesystem::directory_iterator(path_), std::filesystem::directory_iterator()));
    }

private:
    std::filesystem::path path_;
};

// A rows x cols tensor from its rows. Tensor{{1.f}, {2.f}} does not compile
// (xarray's nested-list constructors are ambiguous when every row has one
// element), and Tensor({2, 3}) is the 1-D tensor [2, 3].
inline xgrad::Tensor matrix(std::initializer_list<std::initializer_list<float>> rows) {
    const std::size_t cols = rows.size() == 0 ? 0 : rows.begin()->size();
    xgrad::Tensor t(xgrad::Shape{rows.size(), cols});
    float* out = t.data();
    for (const auto& row : rows) {
        if (row.size() != cols) throw std::invalid_argument("test::matrix: rows of different lengths");
        for (float v : row) *out++ = v;
    }
    return t;
}

inline xgrad::Tensor random_tensor(const xgrad::Shape& shape, float lo, float hi, std::uint64_t seed) {
    xgrad::Tensor t(shape);
    xgrad::Rng(seed).fill_uniform(t, lo, hi);
    return t;
}

// Both checkers of f at inputs must pass: gradcheck (the first derivative,
// against finite differences of f) and gradgradcheck (the second, against
// finite differences of the first-order gradient), each having compared
// every element of every input that requires a gradient.
inline void check_gradients(const std::string& what, const std::function<xgrad::Var(const std::vector<xgrad::Var>&)>& f,
                            const std::vector<xgrad::Var>& inputs, const xgrad::GradcheckOptions& options = {}) {
    std::size_t expected = 0;
    for (const xgrad::Var& in : inputs) {
        if (in.requires_grad()) expected += in.value().size();
    }
    const xgrad::GradcheckResult first = xgrad::gradcheck(f, inputs, options);
    INFO(what << ": " << first.report());
    CHECK(first.ok);
    CHECK(first.checked == expected);
    const xgrad::GradcheckResult second = xgrad::gradgradcheck(f, inputs, options);
    INFO(what << ": " << second.report());
    CHECK(second.ok);
    CHECK(second.checked >= expected);  // and the random grad_output's elements
}

}  // namespace test
