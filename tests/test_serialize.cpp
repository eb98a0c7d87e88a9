// Archives: bit-exact round trips, training that resumes bit-identically from
// a file, loud rejection of every kind of damaged file, and atomic saves.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <limits>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <unistd.h>
#include <zlib.h>

#include <xgrad/io/archive_file.hpp>
#include <xgrad/nn.hpp>
#include <xgrad/ops.hpp>
#include <xgrad/optim.hpp>
#include "helpers.hpp"

using namespace xgrad;
using doctest::Contains;
namespace fs = std::filesystem;

namespace {

// File helpers of the tests themselves: they throw (failing the test case)
// rather than assert, so that assertion counts reflect checks of xgrad.
std::string read_bytes(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("test: cannot read " + path);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void write_bytes(const std::string& path, const std::string& bytes) {
    // Truncating a written file makes ext4 flush it on close (auto_da_alloc):
    // milliseconds per call. A new file costs microseconds.
    fs::remove(path);
    std::ofstream out(path, std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!out) throw std::runtime_error("test: cannot write " + path);
}

// Equal shapes and equal bits: NaN payloads and -0 included.
bool same_bits(const Tensor& a, const Tensor& b) {
    return a.shape() == b.shape() && (a.size() == 0 || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

float from_bits(std::uint32_t bits) {
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
}

}  // namespace

TEST_CASE("an archive round trip is bit-exact") {
    using limits = std::numeric_limits<float>;
    Tensor odd = Tensor::from_shape({3, 7});
    const float specials[] = {from_bits(0x7fc12345u), from_bits(0xffc00001u), limits::infinity(), -limits::infinity(), -0.f,
                              limits::denorm_min(),   limits::max(),          limits::lowest(),   limits::min(),       1.f / 3.f};
    for (std::size_t i = 0; i < odd.size(); ++i) {
        odd.flat(i) = i < std::size(specials) ? specials[i] : static_cast<float>(i) * 0.1f - 1.f;
    }
    Tensor row = Tensor::from_shape({1, 5}), column = Tensor::from_shape({5, 1}), vector = Tensor::from_shape({5});
    for (std::size_t i = 0; i < 5; ++i) row.flat(i) = column.flat(4 - i) = vector.flat(i) = static_cast<float>(i) - 2.5f;
    Tensor cube = Tensor::from_shape({2, 3, 4}), four = Tensor::from_shape({2, 1, 3, 2});
    for (std::size_t i = 0; i < cube.size(); ++i) cube.flat(i) = static_cast<float>(i) * 0.25f - 3.f;
    for (std::size_t i = 0; i < four.size(); ++i) four.flat(i) = -static_cast<float>(i) / 7.f;
    const std::map<std::string, Tensor> tensors = {
        {"odd", odd},
        {"one by one", test::matrix({{-2.5f}})},
        {"scalar", Tensor(Shape{}, -2.5f)},  // rank 0: one element, no sizes
        {"row", row},
        {"column", column},
        {"vector", vector},
        {"cube", cube},
        {"rank 4", four},
        {"no rows", Tensor::from_shape({0, 4})},
        {"nothing", Tensor::from_shape({0, 0})},
        {"empty vector", Tensor::from_shape({0})},
        {"empty cube", Tensor::from_shape({2, 0, 3})},
    };
    const std::map<std::string, std::string> texts = {
        {"note", "resume at step 12\n"},
        {"empty", ""},
        {"binary", std::string("a\0b\xff", 4)},
        {"\xc3\xbc-name", "value"},
    };
    Archive archive;
    for (const auto& [name, t] : tensors) archive.put(name, t);
    for (const auto& [name, text] : texts) archive.put_text(name, text);

    test::TempDir dir;
    const std::string path = dir.file("round.xga");
    write_archive(path, archive);
    const Archive loaded = read_archive(path);
    for (const auto& [name, t] : tensors) {
        const std::string tensor_name = name;  // clang cannot capture a structured binding
        CAPTURE(tensor_name);
        REQUIRE(loaded.contains(name));
        CHECK(same_bits(loaded.tensor(name), t));
        CHECK(loaded.tensor(name).dimension() == t.dimension());  // (5) stays (5), () stays ()
    }
    for (const auto& [name, text] : texts) {
        const std::string text_name = name;
        CAPTURE(text_name);
        REQUIRE(loaded.contains(name));
        CHECK(loaded.text(name) == text);
    }
    CHECK_FALSE(loaded.contains("absent"));
    CHECK_THROWS_WITH_AS(loaded.tensor("absent"), Contains("'absent'"), std::out_of_range);
    CHECK_THROWS_WITH_AS(loaded.text("odd"), Contains("'odd'"), std::out_of_range);  // a tensor is not a text

    // The format is canonical: saving what was loaded reproduces the file.
    const std::string again = dir.file("again.xga");
    write_archive(again, loaded);
    CHECK(read_bytes(again) == read_bytes(path));
}

namespace {

// Modules can be neither copied nor moved: made on the heap.
std::unique_ptr<Sequential> make_model(std::uint64_t seed) {
    Rng rng(seed);
    auto net = std::make_unique<Sequential>();
    net->add<Linear>(3, 5, rng);
    net->add<Tanh>();
    net->add<Linear>(5, 1, rng);
    return net;
}

void train(Module& model, Optimizer& optimizer, const Var& x, const Var& targets, int steps) {
    for (int i = 0; i < steps; ++i) {
        optimizer.zero_grad();
        backward(bce_with_logits(model(x), targets));
        optimizer.step();
    }
}

bool same_parameters(const Module& a, const Module& b) {
    const NamedVars pa = a.named_parameters(), pb = b.named_parameters();
    if (pa.size() != pb.size()) return false;
    for (std::size_t i = 0; i < pa.size(); ++i) {
        if (pa[i].first != pb[i].first || !same_bits(pa[i].second.value(), pb[i].second.value())) return false;
    }
    return true;
}

using MakeOptimizer = std::function<std::unique_ptr<Optimizer>(std::vector<Var>)>;

// Trains a model, checkpoints model and optimizer to a file, restores both
// into a differently initialised model, and trains both further.
void check_resumes_bit_identically(const MakeOptimizer& make_optimizer) {
    Rng rng(9);
    Tensor inputs = Tensor::from_shape({8, 3}), labels = Tensor::from_shape({8, 1});
    rng.fill_uniform(inputs, -1.f, 1.f);
    for (float& l : labels) l = static_cast<float>(rng.below(2));
    const Var x(inputs), targets(labels);

    const auto original_model = make_model(1);
    Sequential& original = *original_model;
    const auto original_optimizer = make_optimizer(original.parameters());
    train(original, *original_optimizer, x, targets, 5);
    test::TempDir dir;
    const std::string path = dir.file("checkpoint.xga");
    Archive checkpoint;
    original.save(checkpoint, "model.");
    original_optimizer->save(checkpoint, "optimizer.");
    write_archive(path, checkpoint);

    const Archive loaded = read_archive(path);
    const auto resumed_model = make_model(2);
    Sequential& resumed = *resumed_model;
    const auto resumed_optimizer = make_optimizer(resumed.parameters());
    REQUIRE_FALSE(same_parameters(original, resumed));
    resumed.load(loaded, "model.");
    resumed_optimizer->load(loaded, "optimizer.");
    CHECK(same_parameters(original, resumed));
    // The same parameters with a fresh optimizer: must drift away, or the
    // final comparison could not notice lost optimizer state.
    const auto restarted_model = make_model(3);
    Sequential& restarted = *restarted_model;
    restarted.load(loaded, "model.");
    const auto restarted_optimizer = make_optimizer(restarted.parameters());

    train(original, *original_optimizer, x, targets, 3);
    train(resumed, *resumed_optimizer, x, targets, 3);
    train(restarted, *restarted_optimizer, x, targets, 3);
    CHECK(same_parameters(original, resumed));
    CHECK_FALSE(same_parameters(original, restarted));
}

}  // namespace

TEST_CASE("a model and its optimizer restored from a file continue training bit-identically") {
    SUBCASE("Adam") {
        AdamOptions options;
        options.lr = 0.01f;
        check_resumes_bit_identically([&](std::vector<Var> p) { return std::make_unique<Adam>(std::move(p), options); });
    }
    SUBCASE("SGD with momentum") {
        check_resumes_bit_identically([](std::vector<Var> p) { return std::make_unique<SGD>(std::move(p), 0.1f, 0.9f); });
    }
}

namespace {

// Archive bytes written by hand, field by field, as archive_file.hpp
// documents the format (little-endian).
class Bytes {
public:
    Bytes& raw(const std::string& s) {
        bytes_ += s;
        return *this;
    }
    template <class T>
    Bytes& put(T value) {
        bytes_.append(reinterpret_cast<const char*>(&value), sizeof value);
        return *this;
    }
    Bytes& u8(std::uint8_t v) { return put(v); }
    Bytes& u32(std::uint32_t v) { return put(v); }
    Bytes& u64(std::uint64_t v) { return put(v); }
    Bytes& f32(float v) { return put(v); }
    Bytes& name(const std::string& n) { return u32(static_cast<std::uint32_t>(n.size())).raw(n); }
    // Version 2 entries.
    Bytes& tensor(const std::string& n, const Tensor& t) {
        u8(1).name(n).u32(static_cast<std::uint32_t>(t.dimension()));
        for (std::size_t size : t.shape()) u64(size);
        for (float v : t) f32(v);
        return *this;
    }
    Bytes& text(const std::string& n, const std::string& value) { return u8(2).name(n).u64(value.size()).raw(value); }
    const std::string& str() const { return bytes_; }

private:
    std::string bytes_;
};

// The bytes followed by their CRC-32 (zlib's): what a well-formed file ends with.
std::string with_crc(const std::string& body) {
    const auto crc = static_cast<std::uint32_t>(crc32_z(0L, reinterpret_cast<const Bytef*>(body.data()), body.size()));
    return Bytes().raw(body).u32(crc).str();
}

// The reference archive: one 2 x 3 tensor "weights", then one text "note"
// of 4 bytes (tensors come first, each kind in name order).
Archive reference_archive() {
    Archive a;
    a.put("weights", Tensor{{1, 2, 3}, {4, 5, 6}});
    a.put_text("note", "abcd");
    return a;
}
std::string reference_body() {
    return Bytes().raw("XGRADARC").u32(3).u32(2).tensor("weights", Tensor{{1, 2, 3}, {4, 5, 6}}).text("note", "abcd").str();
}
// Its layout, offset by offset.
constexpr std::size_t kEntryStart = 8 + 4 + 4;                 // magic, version, count
constexpr std::size_t kNameStart = kEntryStart + 1 + 4;        // kind, name length
constexpr std::size_t kRankAt = kNameStart + 7;                // "weights"
constexpr std::size_t kShapeAt = kRankAt + 4;                  // u32 rank
constexpr std::size_t kDataStart = kShapeAt + 2 * 8;           // u64 2, u64 3
constexpr std::size_t kTextEntry = kDataStart + 6 * 4;         // six floats
constexpr std::size_t kTextLengthAt = kTextEntry + 1 + 4 + 4;  // kind, name length, "note"
constexpr std::size_t kTextDataAt = kTextLengthAt + 8;
constexpr std::size_t kBodyEnd = kTextDataAt + 4;  // "abcd"
constexpr std::size_t kFileSize = kBodyEnd + 4;    // the CRC-32

// The same archive as xgrad 0.1 wrote it (format version 1): every tensor
// 2-D as "u64 rows, u64 cols", with a valid CRC.
std::string reference_v1_file() {
    Bytes b;
    b.raw("XGRADARC").u32(1).u32(2).u8(1).name("weights").u64(2).u64(3);
    for (int v = 1; v <= 6; ++v) b.f32(static_cast<float>(v));
    b.text("note", "abcd");
    return with_crc(b.str());
}

}  // namespace

TEST_CASE("an archive file is the documented version 3 layout") {
    test::TempDir dir;
    const std::string path = dir.file("layout.xga");
    write_archive(path, reference_archive());
    const std::string bytes = read_bytes(path);
    CHECK(bytes.size() == kFileSize);
    CHECK(bytes == with_crc(reference_body()));

    // Ranks other than 2: a scalar has rank 0 and no sizes but one element.
    Archive ranks;
    Tensor cube = Tensor::from_shape({2, 1, 3});
    for (std::size_t i = 0; i < cube.size(); ++i) cube.flat(i) = static_cast<float>(i) + 0.5f;
    ranks.put("a scalar", Tensor(Shape{}, 7.f));
    ranks.put("b vector", Tensor{1.f, -1.f});
    ranks.put("c cube", cube);
    ranks.put("d empty", Tensor::from_shape({3, 0}));
    write_archive(path, ranks);
    const std::string expected = Bytes()
                                     .raw("XGRADARC")
                                     .u32(3)
                                     .u32(4)
                                     .tensor("a scalar", Tensor(Shape{}, 7.f))
                                     .tensor("b vector", Tensor{1.f, -1.f})
                                     .tensor("c cube", cube)
                                     .tensor("d empty", Tensor::from_shape({3, 0}))
                                     .str();
    CHECK(read_bytes(path) == with_crc(expected));
    CHECK(expected.substr(kEntryStart, 1 + 4 + 8 + 4 + 4) == Bytes().u8(1).name("a scalar").u32(0).f32(7.f).str());
    // And files written by hand read back.
    write_bytes(path, with_crc(expected));
    const Archive loaded = read_archive(path);
    CHECK(same_bits(loaded.tensor("a scalar"), Tensor(Shape{}, 7.f)));
    CHECK(same_bits(loaded.tensor("c cube"), cube));
    CHECK(loaded.tensor("d empty").shape() == Shape{3, 0});
}

TEST_CASE("a damaged archive is rejected with a message naming the file and the damage") {
    test::TempDir dir;
    const std::string good_path = dir.file("good.xga");
    write_archive(good_path, reference_archive());
    const std::string good = read_bytes(good_path);
    REQUIRE(good.size() == kFileSize);
    REQUIRE(good == with_crc(reference_body()));
    const std::string body = good.substr(0, kBodyEnd);
    const std::string bad = dir.file("bad.xga");

    const auto check_rejected = [&](const std::string& bytes, const char* damage) {
        CAPTURE(damage);
        write_bytes(bad, bytes);
        CHECK_THROWS_WITH_AS(read_archive(bad), Contains(bad.c_str()), std::runtime_error);
        CHECK_THROWS_WITH_AS(read_archive(bad), Contains(damage), std::runtime_error);
    };
    constexpr const char* kCorrupt = "corrupt (CRC mismatch";
    std::string bytes = good;
    SUBCASE("wrong magic") {
        bytes.replace(0, 8, "NOTXGRAD");
        check_rejected(bytes, "wrong magic number");
    }
    SUBCASE("another version") {
        for (const std::uint32_t version : {0u, 4u, 0x01000003u}) {
            CAPTURE(version);
            std::string other = good;
            other.replace(8, 4, Bytes().u32(version).str());
            const std::string message = "format version " + std::to_string(version) + "; this build reads version 3";
            check_rejected(other, message.c_str());
            // Refused by its version, before the CRC: the same with a valid CRC.
            check_rejected(with_crc(other.substr(0, kBodyEnd)), message.c_str());
        }
    }
    SUBCASE("a version 1 file of xgrad 0.1") {
        const std::string v1 = reference_v1_file();
        check_rejected(v1, "format version 1 (written by xgrad 0.1); this build reads version 3");
    }
    SUBCASE("a version 2 file, from before Linear weights were (out, in)") {
        std::string v2 = body;
        v2.replace(8, 4, Bytes().u32(2).str());
        check_rejected(with_crc(v2), "format version 2 (written by xgrad 0.2 with Linear weights (in, out))");
    }
    SUBCASE("truncated") {
        // Cut inside the fixed header: named as such. Any later cut: the
        // last four bytes are no longer the CRC of the rest.
        const std::pair<std::size_t, const char*> cuts[] = {
            {0, "inside the magic number"},
            {5, "inside the magic number"},
            {8, "inside the version"},
            {10, "inside the version"},
            {12, "truncated: the file ends inside the header"},
            {14, "truncated: the file ends inside the header"},
            {19, "truncated: the file ends inside the header"},
            {20, kCorrupt},
            {kNameStart + 3, kCorrupt},
            {kDataStart + 10, kCorrupt},
            {kBodyEnd, kCorrupt},
            {kBodyEnd + 2, kCorrupt},
            {kFileSize - 1, kCorrupt},
        };
        for (const auto& [size, damage] : cuts) {
            const std::size_t cut_at = size;  // clang cannot capture a structured binding
            CAPTURE(cut_at);
            check_rejected(good.substr(0, size), damage);
        }
    }
    SUBCASE("truncated, then given a valid CRC: the parser names where the entries end") {
        const std::pair<std::size_t, const char*> cuts[] = {
            {kEntryStart, "truncated: the file ends inside an entry"},
            {kEntryStart + 3, "truncated: the file ends inside an entry name"},  // in its length
            {kNameStart + 3, "truncated: the file ends inside an entry name"},
            {kRankAt + 2, "truncated: the file ends inside a tensor rank"},
            {kShapeAt + 9, "truncated: the file ends inside a tensor shape"},
            {kDataStart, "tensor 'weights' of shape (2, 3) needs 24 bytes, the file has 0 left"},
            {kDataStart + 10, "tensor 'weights' of shape (2, 3) needs 24 bytes, the file has 10 left"},
            {kTextEntry, "truncated: the file ends inside an entry"},
            {kTextEntry + 3, "truncated: the file ends inside an entry name"},
            {kTextLengthAt + 3, "truncated: the file ends inside a text length"},
            {kTextDataAt + 2, "truncated: the file ends inside text data"},
        };
        for (const auto& [size, damage] : cuts) {
            const std::size_t cut_at = size;  // clang cannot capture a structured binding
            CAPTURE(cut_at);
            check_rejected(with_crc(body.substr(0, size)), damage);
        }
    }
    SUBCASE("one flipped byte") {
        bytes[kDataStart + 5] ^= 0x10;
        check_rejected(bytes, kCorrupt);
        bytes = good;
        bytes[kFileSize - 2] ^= 0x01;  // in the CRC itself
        check_rejected(bytes, kCorrupt);
    }
    SUBCASE("trailing bytes") {
        check_rejected(good + std::string(3, '\0'), kCorrupt);  // after the CRC: it is not the last 4 bytes any more
        check_rejected(with_crc(body + std::string(3, '\0')), "3 unexpected bytes after the last entry");
    }
    SUBCASE("damage behind a valid CRC: every structural check has its own message") {
        std::string kind = body;
        kind[kEntryStart] = 7;
        check_rejected(with_crc(kind), "entry 'weights' has unknown kind 7");

        const std::string twice = Bytes().raw("XGRADARC").u32(3).u32(2).text("a", "x").text("a", "y").str();
        check_rejected(with_crc(twice), "entry 'a' appears twice");

        std::string rank = body;
        rank.replace(kRankAt, 4, Bytes().u32(33).str());
        check_rejected(with_crc(rank), "tensor 'weights' has rank 33");

        // Sizes whose product overflows 64 bits, and a plain size too large.
        const std::string overflow = Bytes()
                                         .raw("XGRADARC")
                                         .u32(3)
                                         .u32(1)
                                         .u8(1)
                                         .name("w")
                                         .u32(3)
                                         .u64(std::uint64_t{1} << 32)
                                         .u64(std::uint64_t{1} << 32)
                                         .u64(std::uint64_t{1} << 32)
                                         .f32(1.f)
                                         .str();
        check_rejected(with_crc(overflow), "tensor 'w' has the impossible shape (4294967296, 4294967296, 4294967296)");
        std::string large = body;
        large.replace(kShapeAt, 8, Bytes().u64(1000).str());
        check_rejected(with_crc(large), "tensor 'weights' of shape (1000, 3) needs 12000 bytes");

        std::string long_name = body;
        long_name.replace(kEntryStart + 1, 4, Bytes().u32(0xffffffffu).str());
        check_rejected(with_crc(long_name), "truncated: the file ends inside an entry name");
        std::string long_text = body;
        long_text.replace(kTextLengthAt, 8, Bytes().u64(std::uint64_t{1} << 63).str());
        check_rejected(with_crc(long_text), "truncated: the file ends inside text data");

        // An entry count that disagrees with the entries.
        std::string more = body, fewer = body;
        more.replace(12, 4, Bytes().u32(3).str());
        check_rejected(with_crc(more), "truncated: the file ends inside an entry");
        fewer.replace(12, 4, Bytes().u32(1).str());
        const std::string unread = std::to_string(kBodyEnd - kTextEntry) + " unexpected bytes after the last entry";
        check_rejected(with_crc(fewer), unread.c_str());
    }
    SUBCASE("any single flipped bit") {
        // Each is refused, naming the file, by the check that owns the byte:
        // the magic number, the version, or else the CRC.
        std::size_t accepted = 0, unnamed = 0, misnamed = 0;
        for (std::size_t i = 0; i < good.size(); ++i) {
            const char* expected = i < 8 ? "wrong magic number" : i < 12 ? "format version" : kCorrupt;
            for (int bit = 0; bit < 8; ++bit) {
                bytes = good;
                bytes[i] = static_cast<char>(bytes[i] ^ (1 << bit));
                write_bytes(bad, bytes);
                try {
                    read_archive(bad);
                    ++accepted;
                } catch (const std::runtime_error& e) {
                    const std::string message = e.what();
                    unnamed += message.find(bad) == std::string::npos;
                    misnamed += message.find(expected) == std::string::npos;
                }
            }
        }
        CHECK(accepted == 0);
        CHECK(unnamed == 0);
        CHECK(misnamed == 0);
    }
    SUBCASE("a missing file") {
        const std::string absent = dir.file("absent.xga");
        CHECK_THROWS_WITH_AS(read_archive(absent), Contains(absent.c_str()), std::runtime_error);
    }
    // The damaged copies never affected the original.
    CHECK(same_bits(read_archive(good_path).tensor("weights"), reference_archive().tensor("weights")));
}

namespace {

// Archive bytes as a buggy or hostile writer could make them, with a valid
// CRC so that the parser behind the checksum gets to see them.
struct RawArchive {
    std::string bytes = std::string("XGRADARC") + std::string("\x03\0\0\0", 4);
    template <class T>
    RawArchive& add(T value) {
        bytes.append(reinterpret_cast<const char*>(&value), sizeof value);
        return *this;
    }
    // A rank-2 tensor entry up to its data.
    RawArchive& tensor_header(const std::string& name, std::uint64_t rows, std::uint64_t cols) {
        add(std::uint8_t{1}).add(static_cast<std::uint32_t>(name.size()));
        bytes += name;
        return add(std::uint32_t{2}).add(rows).add(cols);
    }
    std::string sealed() const {
        std::string out = bytes;
        const auto crc = static_cast<std::uint32_t>(crc32_z(0L, reinterpret_cast<const Bytef*>(out.data()), out.size()));
        out.append(reinterpret_cast<const char*>(&crc), sizeof crc);
        return out;
    }
};

}  // namespace

TEST_CASE("tensor shapes behind a valid checksum are checked without overflow") {
    test::TempDir dir;
    const std::string path = dir.file("crafted.xga");
    const auto read_crafted = [&](const RawArchive& raw) {
        write_bytes(path, raw.sealed());
        return read_archive(path);
    };
    const std::uint64_t big = std::uint64_t(1) << 63;
    const std::pair<std::uint64_t, std::uint64_t> impossible[] = {
        {0, big}, {big, 0}, {big, 4}, {0, ~std::uint64_t(0)}, {std::uint64_t(1) << 32, std::uint64_t(1) << 32}};
    for (const auto& [rows, cols] : impossible) {
        const std::uint64_t shown_rows = rows, shown_cols = cols;  // clang cannot capture a structured binding
        CAPTURE(shown_rows);
        CAPTURE(shown_cols);
        RawArchive raw;
        raw.add(std::uint32_t{1}).tensor_header("t", rows, cols);
        CHECK_THROWS_WITH_AS(read_crafted(raw), Contains("tensor 't'"), std::runtime_error);
        CHECK_THROWS_WITH_AS(read_crafted(raw), Contains(path.c_str()), std::runtime_error);
    }
    // Data promised beyond the end of the file.
    RawArchive beyond;
    beyond.add(std::uint32_t{1}).tensor_header("t", 2, 3).add(1.f);
    CHECK_THROWS_WITH_AS(read_crafted(beyond), Contains("tensor 't' of shape (2, 3) needs 24 bytes, the file has 4 left"),
                         std::runtime_error);
    // More entries than the count says.
    RawArchive extra;
    extra.add(std::uint32_t{1}).tensor_header("a", 1, 1).add(1.f).tensor_header("b", 1, 1).add(2.f);
    CHECK_THROWS_WITH_AS(read_crafted(extra), Contains("30 unexpected bytes after the last entry"), std::runtime_error);

    // Empty tensors of sane shapes load, whatever their place in the file.
    RawArchive empty;
    empty.add(std::uint32_t{3}).tensor_header("rows", 0, 5).tensor_header("cols", 7, 0).tensor_header("none", 0, 0);
    const Archive loaded = read_crafted(empty);
    CHECK(loaded.tensor("rows").shape() == Shape{0, 5});
    CHECK(loaded.tensor("cols").shape() == Shape{7, 0});
    CHECK(loaded.tensor("none").size() == 0);
}

TEST_CASE("Module::load names a parameter that is missing or has another shape") {
    Rng rng(1);
    Sequential saved;
    saved.add<Linear>(2, 3, rng);
    Archive archive;
    saved.save(archive, "gen.");

    Sequential wider;
    wider.add<Linear>(4, 3, rng);
    CHECK_THROWS_WITH_AS(wider.load(archive, "gen."), Contains("'gen.0.weight'"), ShapeError);
    CHECK_THROWS_WITH_AS(wider.load(archive, "gen."), Contains("(3, 2)"), ShapeError);
    CHECK_THROWS_WITH_AS(wider.load(archive, "gen."), Contains("(3, 4)"), ShapeError);

    Archive partial;
    partial.put("gen.0.weight", archive.tensor("gen.0.weight"));
    Sequential same_shape;
    same_shape.add<Linear>(2, 3, rng);
    CHECK_THROWS_WITH_AS(same_shape.load(partial, "gen."), Contains("'gen.0.bias'"), std::out_of_range);
    CHECK_THROWS_WITH_AS(same_shape.load(archive, "disc."), Contains("'disc.0.weight'"), std::out_of_range);

    // Optimizer state is checked against its parameters the same way.
    Archive state;
    Adam(saved.parameters()).save(state, "adam.");
    Adam other(wider.parameters());
    CHECK_THROWS_WITH_AS(other.load(state, "adam."), Contains("'adam.m.0'"), ShapeError);

    // A 0.1-style bias, a (1, 3) matrix, does not pass for a 0.2 bias (3).
    Archive old_bias;
    saved.save(old_bias, "gen.");
    old_bias.put("gen.0.bias", Tensor(Shape{1, 3}, 0.f));
    Sequential fresh;
    fresh.add<Linear>(2, 3, rng);
    CHECK_THROWS_WITH_AS(fresh.load(old_bias, "gen."), Contains("'gen.0.bias'"), ShapeError);
    CHECK_THROWS_WITH_AS(fresh.load(old_bias, "gen."), Contains("(1, 3)"), ShapeError);
    CHECK_THROWS_WITH_AS(fresh.load(old_bias, "gen."), Contains("is (3)"), ShapeError);
}

TEST_CASE("a failed Module::load changes no parameter") {
    Rng rng(2);
    Sequential saved;
    saved.add<Linear>(2, 3, rng);
    saved.add<Linear>(3, 1, rng);
    Archive archive;
    saved.save(archive);

    Sequential other;
    other.add<Linear>(2, 3, rng);
    other.add<Linear>(3, 2, rng);  // its second layer does not fit
    const Tensor first_before = other.parameters()[0].value();
    CHECK_THROWS_WITH_AS(other.load(archive), Contains("'1.weight'"), ShapeError);
    CHECK(same_bits(other.parameters()[0].value(), first_before));
}

TEST_CASE("loading a directory as an archive names it") {
    test::TempDir dir;
    const std::string path = dir.file("sub");
    fs::create_directory(path);
    CHECK_THROWS_WITH_AS(read_archive(path), Contains(path.c_str()), std::runtime_error);
}

TEST_CASE("save replaces the file atomically and cleans up after a failure") {
    test::TempDir dir;
    const std::string path = dir.file("model.xga");
    const std::string tmp = path + ".tmp";
    Archive first, second;
    first.put_text("which", "first");
    second.put_text("which", "second");
    write_archive(path, first);
    CHECK_FALSE(fs::exists(tmp));

    SUBCASE("a successful save replaces the old file") {
        write_archive(path, second);
        CHECK(read_archive(path).text("which") == "second");
        CHECK_FALSE(fs::exists(tmp));
        CHECK(dir.entries() == 1);
    }
    SUBCASE("a failed save leaves the old file whole") {
        // A non-empty directory where the temporary file must go: creating
        // the temporary file fails, and so does any attempt to remove it.
        fs::create_directory(tmp);
        write_bytes(tmp + "/occupied", "x");
        const std::string before = read_bytes(path);
        CHECK_THROWS_WITH_AS(write_archive(path, second), Contains(path.c_str()), std::runtime_error);
        CHECK(read_bytes(path) == before);
        CHECK(read_archive(path).text("which") == "first");
    }
    SUBCASE("a save that fails at the rename removes its temporary file") {
        const std::string occupied = dir.file("occupied");
        fs::create_directory(occupied);
        write_bytes(occupied + "/inside", "x");
        CHECK_THROWS_WITH_AS(write_archive(occupied, second), Contains(occupied.c_str()), std::runtime_error);
        CHECK_FALSE(fs::exists(occupied + ".tmp"));
        CHECK(fs::is_directory(occupied));
    }
    SUBCASE("a missing directory") {
        const std::string nowhere = dir.file("missing/model.xga");
        CHECK_THROWS_WITH_AS(write_archive(nowhere, second), Contains(nowhere.c_str()), std::runtime_error);
        CHECK_FALSE(fs::exists(dir.file("missing")));
    }
    SUBCASE("an unwritable directory") {
        if (::geteuid() == 0) {
            MESSAGE("skipped: permissions do not restrict root");
        } else {
            const std::string locked = dir.file("locked");
            fs::create_directory(locked);
            fs::permissions(locked, fs::perms::owner_read | fs::perms::owner_exec);
            const std::string target = locked + "/model.xga";
            CHECK_THROWS_WITH_AS(write_archive(target, second), Contains(target.c_str()), std::runtime_error);
            fs::permissions(locked, fs::perms::owner_all);
        }
    }
}
