// safetensors: xgrad's own files round-trip bit-exactly, a file written by
// PyTorch (tests/data/make_torch_fixture.py) loads and gives PyTorch's
// outputs, and every malformed file is refused with the module unchanged.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <limits>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <xgrad/io/safetensors.hpp>
#include <xgrad/nn.hpp>

#include "helpers.hpp"

namespace {

using doctest::Contains;
using nlohmann::json;
using xgrad::BatchNorm1d;
using xgrad::Linear;
using xgrad::Rng;
using xgrad::Sequential;
using xgrad::Shape;
using xgrad::Tensor;
using xgrad::Var;

bool same_bits(const Tensor& a, const Tensor& b) {
    return a.shape() == b.shape() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

std::string read_bytes(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void write_bytes(const std::string& path, const std::string& bytes) {
    std::ofstream out(path, std::ios::binary);
    out << bytes;
}

// Linear(3, 2), BatchNorm1d(2): names 0.weight (2, 3), 0.bias (2), 1.weight,
// 1.bias, 1.running_mean, 1.running_var (2).
struct Small {
    explicit Small(std::uint64_t seed) : rng(seed) {
        net.add<Linear>(3, 2, rng);
        auto& bn = net.add<BatchNorm1d>(2);
        bn.weight.mutable_value() = Tensor{1.5f, -0.5f};
        bn.running_mean.mutable_value() = Tensor{0.25f, -1.f};
        bn.running_var.mutable_value() = Tensor{2.f, 0.5f};
    }
    std::vector<Tensor> values() const {
        std::vector<Tensor> out;
        for (const auto& [name, v] : net.named_parameters()) out.push_back(v.value());
        for (const auto& [name, v] : net.named_buffers()) out.push_back(v.value());
        return out;
    }
    Rng rng;
    Sequential net;
};

// A safetensors file from a header and the data after it.
std::string file_bytes(const std::string& header, const std::string& data) {
    std::string bytes(8, '\0');
    const std::uint64_t n = header.size();
    for (int i = 0; i < 8; ++i) bytes[static_cast<std::size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
    return bytes + header + data;
}

template <class T>
std::string raw(const std::vector<T>& values) {
    return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
}

// Small's tensors as F32, in order, with their header.
struct Valid {
    json header = json::object();
    std::string data;
    void add(const std::string& name, const std::string& dtype, const std::vector<std::size_t>& shape, const std::string& bytes) {
        header[name] = {{"dtype", dtype}, {"shape", shape}, {"data_offsets", {data.size(), data.size() + bytes.size()}}};
        data += bytes;
    }
    Valid() {
        add("0.weight", "F32", {2, 3}, raw(std::vector<float>{1, 2, 3, 4, 5, 6}));
        add("0.bias", "F32", {2}, raw(std::vector<float>{-1, 1}));
        add("1.weight", "F32", {2}, raw(std::vector<float>{7, 8}));
        add("1.bias", "F32", {2}, raw(std::vector<float>{9, 10}));
        add("1.running_mean", "F32", {2}, raw(std::vector<float>{11, 12}));
        add("1.running_var", "F32", {2}, raw(std::vector<float>{13, 14}));
        add("1.num_batches_tracked", "I64", {}, raw(std::vector<std::int64_t>{5}));
    }
    std::string bytes() const { return file_bytes(header.dump(), data); }
};

}  // namespace

TEST_CASE("safetensors: xgrad's files round-trip bit-exactly, under PyTorch's names") {
    test::TempDir dir;
    const std::string path = dir.file("small.safetensors");
    Small saved(1), loaded(2);
    saved.net.parameters()[1].mutable_value() = Tensor{0.1f, -3e-39f};  // a subnormal too
    xgrad::save_safetensors(saved.net, path);
    xgrad::load_safetensors(loaded.net, path);
    const auto a = saved.values(), b = loaded.values();
    REQUIRE(a.size() == b.size());
    for (std::size_t i = 0; i < a.size(); ++i) CHECK(same_bits(a[i], b[i]));
    const auto file = xgrad::read_safetensors(path);
    CHECK(file.size() == 7);
    CHECK(file.at("0.weight").shape == Shape{2, 3});  // (out, in), as PyTorch
    CHECK(file.at("1.num_batches_tracked").dtype == "I64");
    CHECK(file.at("1.num_batches_tracked").shape == Shape{});
    CHECK(file.at("1.running_var").dtype == "F32");
    // Writing it again gives the same bytes; the data start 8-aligned.
    const std::string again = dir.file("again.safetensors");
    xgrad::save_safetensors(loaded.net, again);
    CHECK(read_bytes(path) == read_bytes(again));
    std::uint64_t n = 0;
    std::memcpy(&n, read_bytes(path).data(), 8);
    CHECK(n % 8 == 0);
}

TEST_CASE("safetensors: a layer with spectral norm writes weight_orig, weight_u and weight_v, as PyTorch") {
    test::TempDir dir;
    const std::string path = dir.file("sn.safetensors");
    Rng rng(3), other_rng(4);
    Linear layer(3, 2, rng), other(3, 2, other_rng);
    layer.apply_spectral_norm(rng);
    other.apply_spectral_norm(other_rng);
    xgrad::save_safetensors(layer, path);
    const auto file = xgrad::read_safetensors(path);
    CHECK(file.count("weight_orig") == 1);
    CHECK(file.count("weight") == 0);
    CHECK(file.at("weight_u").shape == Shape{2});
    CHECK(file.at("weight_v").shape == Shape{3});
    xgrad::load_safetensors(other, path);
    CHECK(same_bits(other.weight.value(), layer.weight.value()));
    CHECK(same_bits(other.spectral_norm()->u.value(), layer.spectral_norm()->u.value()));
}

TEST_CASE("safetensors: F16, BF16, F64 and I64 convert to float; num_batches_tracked is optional") {
    test::TempDir dir;
    const std::string path = dir.file("dtypes.safetensors");
    Valid v;
    // 0.weight as F16 (1, -2, 0.5, 65504, 2^-24, -0) and 0.bias as BF16 (3, -0.15625).
    v.header.clear();
    v.data.clear();
    v.add("0.weight", "F16", {2, 3}, raw(std::vector<std::uint16_t>{0x3c00, 0xc000, 0x3800, 0x7bff, 0x0001, 0x8000}));
    v.add("0.bias", "BF16", {2}, raw(std::vector<std::uint16_t>{0x4040, 0xbe20}));
    v.add("1.weight", "F64", {2}, raw(std::vector<double>{0.1, -2.5}));
    v.add("1.bias", "I64", {2}, raw(std::vector<std::int64_t>{-7, 16777216}));
    v.add("1.running_mean", "F32", {2}, raw(std::vector<float>{11, 12}));
    v.add("1.running_var", "F32", {2}, raw(std::vector<float>{13, 14}));
    write_bytes(path, v.bytes());
    Small s(1);
    xgrad::load_safetensors(s.net, path);
    const auto values = s.values();
    CHECK(values[0] == Tensor{{1.f, -2.f, 0.5f}, {65504.f, std::ldexp(1.f, -24), -0.f}});
    CHECK(std::signbit(values[0](1, 2)));
    CHECK(values[1] == Tensor{3.f, -0.15625f});
    CHECK(values[2] == Tensor{0.1f, -2.5f});  // rounded to the nearest float
    CHECK(values[3] == Tensor{-7.f, 16777216.f});
}

TEST_CASE("safetensors: every malformed file is refused, naming the file and the tensor, and nothing is loaded") {
    test::TempDir dir;
    const std::string path = dir.file("bad.safetensors");
    struct Case {
        const char* what;
        std::string bytes;
        std::string message;  // besides the path
    };
    std::vector<Case> cases;
    const auto with = [](const std::function<void(Valid&)>& change) {
        Valid v;
        change(v);
        return v.bytes();
    };
    cases.push_back({"a missing tensor", with([](Valid& v) { v.header.erase("0.bias"); }), "tensor '0.bias' is missing"});
    cases.push_back({"an extra tensor", with([](Valid& v) { v.add("2.weight", "F32", {1}, raw(std::vector<float>{1})); }),
                     "tensor '2.weight' is not in the module"});
    cases.push_back({"a wrong shape", with([](Valid& v) {
                         v.header["0.weight"]["shape"] = {3, 2};
                     }),
                     "tensor '0.weight' is (3, 2) in the file but (2, 3) in the module"});
    cases.push_back({"an unknown dtype", with([](Valid& v) { v.header["0.bias"]["dtype"] = "I32"; }),
                     "tensor '0.bias': dtype I32 (expected F32, F16, BF16, F64 or I64)"});
    cases.push_back({"a size that does not match the dtype", with([](Valid& v) { v.header["0.bias"]["dtype"] = "F64"; }),
                     "tensor '0.bias': data_offsets [24, 32] hold 8 bytes but F64 [2] needs 16"});
    cases.push_back({"a truncated file", with([](Valid& v) { v.data.resize(v.data.size() - 4); }),
                     "tensor '1.num_batches_tracked': data_offsets [64, 72] outside the 68 bytes of data (truncated?)"});
    cases.push_back({"overlapping ranges", with([](Valid& v) {
                         v.header["0.bias"]["data_offsets"] = {20, 28};
                     }),
                     "data_offsets overlap those of tensor '0.weight'"});
    cases.push_back({"a header larger than the file", file_bytes(std::string(40, ' '), "").substr(0, 30),
                     "the header's length 40 is larger than the file's 22 bytes after it"});
    cases.push_back({"a file shorter than 8 bytes", "abc", "truncated: 3 bytes (expected at least 8, the header's length)"});
    cases.push_back({"bad JSON", file_bytes("{\"0.weight\": {", ""), "the header is not valid JSON"});
    cases.push_back({"JSON that is not an object", file_bytes("[1, 2]", ""), "the header is array (expected a JSON object)"});
    cases.push_back(
        {"an entry without data_offsets", with([](Valid& v) { v.header["0.bias"].erase("data_offsets"); }), "tensor '0.bias': "});
    cases.push_back({"a negative extent", with([](Valid& v) { v.header["0.bias"]["shape"] = {-2}; }),
                     "tensor '0.bias': shape holds -2 (expected integers >= 0)"});
    cases.push_back({"a huge shape", with([](Valid& v) {
                         v.header["0.bias"]["shape"] = {1ull << 40, 1ull << 40};
                     }),
                     "tensor '0.bias': shape [1099511627776,1099511627776] is too large"});
    cases.push_back({"a NaN", with([](Valid& v) {
                         const float nan = std::numeric_limits<float>::quiet_NaN();
                         std::memcpy(&v.data[28], &nan, 4);
                     }),
                     "tensor '0.bias' holds nan at 1 (expected finite values)"});
    cases.push_back({"an F64 beyond float", with([](Valid& v) {
                         v.header.erase("1.bias");
                         v.add("1.bias", "F64", {2}, raw(std::vector<double>{1.0, 1e300}));
                     }),
                     "tensor '1.bias': F64 value"});
    cases.push_back({"an I64 that is not a float", with([](Valid& v) {
                         v.header.erase("1.bias");
                         v.add("1.bias", "I64", {2}, raw(std::vector<std::int64_t>{1, 16777217}));
                     }),
                     "tensor '1.bias': I64 value 16777217 at 1 is not exactly a float"});
    cases.push_back({"num_batches_tracked as a float", with([](Valid& v) { v.header["1.num_batches_tracked"]["dtype"] = "F64"; }),
                     "tensor '1.num_batches_tracked' is F64 () (expected one I64 value)"});
    for (const Case& c : cases) {
        INFO(c.what);
        write_bytes(path, c.bytes);
        Small s(5);
        const auto before = s.values();
        CHECK_THROWS_WITH_AS(xgrad::load_safetensors(s.net, path), Contains(c.message.c_str()), std::runtime_error);
        CHECK_THROWS_WITH_AS(xgrad::load_safetensors(s.net, path), Contains(path.c_str()), std::runtime_error);
        const auto after = s.values();
        for (std::size_t i = 0; i < before.size(); ++i) CHECK(same_bits(before[i], after[i]));
    }
    // The valid file it is made from loads.
    write_bytes(path, Valid().bytes());
    Small s(5);
    xgrad::load_safetensors(s.net, path);
    CHECK(s.values()[5] == Tensor{13.f, 14.f});
}

TEST_CASE("safetensors: a non-finite value is not written, and the old file stays") {
    test::TempDir dir;
    const std::string path = dir.file("model.safetensors");
    Small s(6);
    xgrad::save_safetensors(s.net, path);
    const std::string before = read_bytes(path);
    s.net.parameters()[1].mutable_value()(0) = std::numeric_limits<float>::infinity();
    CHECK_THROWS_WITH_AS(xgrad::save_safetensors(s.net, path), Contains("tensor '0.bias' holds inf at 0"), std::runtime_error);
    CHECK(read_bytes(path) == before);
    CHECK(dir.entries() == 1);
}

TEST_CASE("safetensors: write_safetensors writes named tensors that read_safetensors reads back bit-exactly") {
    test::TempDir dir;
    const std::string path = dir.file("tensors.safetensors");
    const Tensor z{{0.25f, -1.f, 3e-39f}, {1.f, 0.f, -0.5f}}, scalar = Tensor::from_shape({});
    xgrad::write_safetensors(path, {{"z", z}, {"nothing", scalar}});
    const auto file = xgrad::read_safetensors(path);
    REQUIRE(file.size() == 2);
    CHECK(file.at("z").dtype == "F32");
    REQUIRE(file.at("z").shape == Shape{2, 3});
    for (std::size_t i = 0; i < z.size(); ++i) CHECK(same_bits(file.at("z").values.data()[i], z.data()[i]));
    CHECK(file.at("nothing").shape == Shape{});

    const Tensor bad{1.f, std::numeric_limits<float>::quiet_NaN()};
    CHECK_THROWS_WITH_AS(xgrad::write_safetensors(path, {{"z", bad}}), Contains("tensor 'z' holds nan at 1"), std::runtime_error);
    CHECK_THROWS_WITH_AS(xgrad::write_safetensors(path, {{"__metadata__", z}}), Contains("cannot name a tensor"),
                         std::invalid_argument);
    CHECK(xgrad::read_safetensors(path).size() == 2);  // the refused writes left the file as it was
}

namespace {

std::string fixture(const std::string& name) {
    const char* dir = std::getenv("XGRAD_TEST_DATA");
    const std::filesystem::path base = dir ? std::filesystem::path(dir) : std::filesystem::path(__FILE__).parent_path() / "data";
    return (base / name).string();
}

}  // namespace

TEST_CASE("safetensors: a PyTorch state dict loads into the same xgrad layers and gives PyTorch's outputs") {
    // tests/data/make_torch_fixture.py: the same nn.Sequential, in eval mode.
    Rng rng(7);
    Sequential net;
    net.add<xgrad::Conv2d>(1, 4, 3, rng, xgrad::Conv2dOptions{1, 1});
    net.add<xgrad::BatchNorm2d>(4);
    net.add<xgrad::ReLU>();
    net.add<xgrad::ConvTranspose2d>(4, 2, 4, rng, xgrad::ConvTranspose2dOptions{2, 1});
    net.add<xgrad::LeakyReLU>(0.2f);
    net.add<xgrad::Flatten>();
    net.add<Linear>(2 * 12 * 12, 5, rng);
    net.add<BatchNorm1d>(5);
    net.add<xgrad::Tanh>();
    const std::string model = fixture("torch_fixture.safetensors");
    REQUIRE_MESSAGE(std::filesystem::exists(model), model);
    xgrad::load_safetensors(net, model);
    net.eval();
    const auto io = xgrad::read_safetensors(fixture("torch_fixture_io.safetensors"));
    const Tensor& x = io.at("input").values;
    const Tensor& expected = io.at("output").values;
    REQUIRE(x.shape() == Shape{3, 1, 6, 6});
    const Tensor y = net(Var(x)).value();
    REQUIRE(y.shape() == expected.shape());
    double worst = 0;
    for (std::size_t i = 0; i < y.size(); ++i) worst = std::max(worst, double(std::abs(y.flat(i) - expected.flat(i))));
    CAPTURE(worst);
    CHECK(worst < 1e-5);
    // And a file xgrad writes from it is the same state dict (PyTorch's num_batches_tracked reads back as 0).
    test::TempDir dir;
    xgrad::save_safetensors(net, dir.file("out.safetensors"));
    const auto original = xgrad::read_safetensors(model), written = xgrad::read_safetensors(dir.file("out.safetensors"));
    REQUIRE(original.size() == written.size());
    for (const auto& entry : original) {
        const std::string& name = entry.first;
        const xgrad::SafetensorsTensor& t = entry.second;
        INFO(name);
        REQUIRE(written.count(name) == 1);
        CHECK(written.at(name).dtype == t.dtype);
        CHECK(written.at(name).shape == t.shape);
        if (t.dtype == "F32") CHECK(same_bits(written.at(name).values, t.values));
    }
}
