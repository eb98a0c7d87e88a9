#include <doctest/doctest.h>

#include <xgrad/io/idx.hpp>
#include "helpers.hpp"

#include <array>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <unistd.h>
#include <zlib.h>

using namespace xgrad;
namespace fs = std::filesystem;

namespace {

// Raw IDX bytes, so tests can build files the writer would refuse.
std::string idx_bytes(const std::vector<std::uint32_t>& header, std::size_t payload_bytes) {
    std::string bytes;
    for (std::uint32_t v : header) {
        for (int shift = 24; shift >= 0; shift -= 8) bytes += static_cast<char>((v >> shift) & 0xff);
    }
    for (std::size_t i = 0; i < payload_bytes; ++i) bytes += static_cast<char>(i * 7 % 251);
    return bytes;
}

void write_file(const std::string& path, const std::string& bytes) { std::ofstream(path, std::ios::binary) << bytes; }

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_gzip(const std::string& path, const std::string& bytes) {
    gzFile gz = gzopen(path.c_str(), "wb9");
    REQUIRE(gz != nullptr);
    REQUIRE(gzwrite(gz, bytes.data(), static_cast<unsigned>(bytes.size())) == static_cast<int>(bytes.size()));
    REQUIRE(gzclose(gz) == Z_OK);
}

IdxImages pattern_images(std::size_t count, std::size_t rows, std::size_t cols) {
    IdxImages images{count, rows, cols, std::vector<std::uint8_t>(count * rows * cols)};
    for (std::size_t i = 0; i < images.pixels.size(); ++i) images.pixels[i] = static_cast<std::uint8_t>(i * 37 % 256);
    return images;
}

// The message of the std::runtime_error f throws, checked to name the file.
template <class F>
std::string error_naming(const std::string& path, F&& f) {
    std::string message = "(no exception)";
    try {
        f();
    } catch (const std::runtime_error& e) {
        message = e.what();
    }
    INFO(message);
    CHECK(message.find("'" + path + "'") != std::string::npos);
    return message;
}

bool has(const std::string& message, const std::string& part) { return message.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("IDX images and labels round-trip with odd counts and sizes") {
    test::TempDir tmp;
    const std::array<std::size_t, 3> shapes[] = {{7, 28, 28}, {3, 5, 4}, {0, 28, 28}};
    for (const auto& shape : shapes) {
        const std::size_t count = shape[0], rows = shape[1], cols = shape[2];
        CAPTURE(count);
        CAPTURE(rows);
        const IdxImages images = pattern_images(count, rows, cols);
        std::vector<std::uint8_t> labels(count);
        for (std::size_t i = 0; i < count; ++i) labels[i] = static_cast<std::uint8_t>(i * 3 % 10);

        write_idx_images(tmp.file("images"), images);
        write_idx_labels(tmp.file("labels"), labels);
        CHECK(fs::file_size(tmp.file("images")) == 16 + count * rows * cols);
        CHECK(fs::file_size(tmp.file("labels")) == 8 + count);

        const IdxImages back = read_idx_images(tmp.file("images"));
        CHECK(back.count == count);
        CHECK(back.rows == rows);
        CHECK(back.cols == cols);
        CHECK(back.pixels == images.pixels);
        CHECK(read_idx_labels(tmp.file("labels")) == labels);
        CHECK_FALSE(fs::exists(tmp.file("images") + ".tmp"));
    }
}

TEST_CASE("IDX headers are big-endian as in the MNIST files") {
    test::TempDir tmp;
    write_idx_images(tmp.file("images"), pattern_images(2, 3, 4));
    CHECK(read_file(tmp.file("images")).substr(0, 16) == idx_bytes({2051, 2, 3, 4}, 0));
    write_idx_labels(tmp.file("labels"), {9, 8});
    CHECK(read_file(tmp.file("labels")) == idx_bytes({2049, 2}, 0) + "\x09\x08");
}

TEST_CASE("gzipped IDX files read like plain ones") {
    test::TempDir tmp;
    const IdxImages images = pattern_images(7, 28, 28);
    write_idx_images(tmp.file("images"), images);
    write_gzip(tmp.file("images.gz"), read_file(tmp.file("images")));
    const IdxImages back = read_idx_images(tmp.file("images.gz"));
    CHECK(back.count == 7);
    CHECK(back.pixels == images.pixels);

    write_gzip(tmp.file("labels.gz"), idx_bytes({2049, 3}, 0) + "\x01\x02\x03");
    CHECK(read_idx_labels(tmp.file("labels.gz")) == std::vector<std::uint8_t>{1, 2, 3});
}

TEST_CASE("a missing or unreadable IDX file is reported with its name") {
    test::TempDir tmp;
    CHECK(has(error_naming(tmp.file("absent"), [&] { read_idx_images(tmp.file("absent")); }), "No such file"));
    CHECK(has(error_naming(tmp.file("absent"), [&] { read_idx_labels(tmp.file("absent")); }), "cannot open IDX labels"));
    fs::create_directory(tmp.file("folder"));
    CHECK(has(error_naming(tmp.file("folder"), [&] { read_idx_images(tmp.file("folder")); }), "Is a directory"));
}

TEST_CASE("a wrong magic number names both magics and spots swapped files") {
    test::TempDir tmp;
    write_file(tmp.file("labels"), idx_bytes({2049, 3}, 3));
    write_file(tmp.file("images"), idx_bytes({2051, 1, 2, 2}, 4));
    write_file(tmp.file("text"), "not an IDX file at all");

    const std::string labels_as_images = error_naming(tmp.file("labels"), [&] { read_idx_images(tmp.file("labels")); });
    CHECK(has(labels_as_images, "expected 2051"));
    CHECK(has(labels_as_images, "found 2049"));
    CHECK(has(labels_as_images, "this is an IDX labels file"));

    const std::string images_as_labels = error_naming(tmp.file("images"), [&] { read_idx_labels(tmp.file("images")); });
    CHECK(has(images_as_labels, "expected 2049"));
    CHECK(has(images_as_labels, "found 2051"));
    CHECK(has(images_as_labels, "this is an IDX images file"));

    const std::string text = error_naming(tmp.file("text"), [&] { read_idx_images(tmp.file("text")); });
    CHECK(has(text, "wrong magic number"));
    CHECK(has(text, "0x6e6f7420"));  // "not " as a big-endian u32
    CHECK_FALSE(has(text, "swapped"));
}

TEST_CASE("a file shorter than its header promises is truncated, with both byte counts") {
    test::TempDir tmp;
    write_file(tmp.file("images"), idx_bytes({2051, 7, 28, 28}, 5000));
    const std::string images = error_naming(tmp.file("images"), [&] { read_idx_images(tmp.file("images")); });
    CHECK(has(images, "truncated"));
    CHECK(has(images, "7 images of 28 x 28 pixels = 5488 bytes"));
    CHECK(has(images, "found 5000"));

    write_file(tmp.file("labels"), idx_bytes({2049, 10}, 9));
    const std::string labels = error_naming(tmp.file("labels"), [&] { read_idx_labels(tmp.file("labels")); });
    CHECK(has(labels, "10 labels = 10 bytes"));
    CHECK(has(labels, "found 9"));

    write_file(tmp.file("header"), idx_bytes({2051, 7}, 2));
    const std::string header = error_naming(tmp.file("header"), [&] { read_idx_images(tmp.file("header")); });
    CHECK(has(header, "ends inside the header"));
    CHECK(has(header, "expected 16 header bytes, found 10"));

    write_file(tmp.file("empty"), "");
    CHECK(has(error_naming(tmp.file("empty"), [&] { read_idx_labels(tmp.file("empty")); }), "expected 4 header bytes, found 0"));
}

TEST_CASE("a header claiming billions of images fails as truncated instead of allocating") {
    test::TempDir tmp;
    write_file(tmp.file("huge"), idx_bytes({2051, 0xffffffffu, 28, 28}, 100));
    CHECK(has(error_naming(tmp.file("huge"), [&] { read_idx_images(tmp.file("huge")); }),
              "= 3367254359280 bytes after the 16-byte header, found 100"));
    write_file(tmp.file("huge-labels"), idx_bytes({2049, 0xffffffffu}, 100));
    CHECK(has(error_naming(tmp.file("huge-labels"), [&] { read_idx_labels(tmp.file("huge-labels")); }), "found 100"));
    // count * rows * cols overflows 64 bits
    write_file(tmp.file("overflow"), idx_bytes({2051, 0xffffffffu, 0xffffffffu, 0xffffffffu}, 0));
    CHECK(has(error_naming(tmp.file("overflow"), [&] { read_idx_images(tmp.file("overflow")); }),
              "more bytes than any file holds"));
}

TEST_CASE("bytes after the data are rejected") {
    test::TempDir tmp;
    write_file(tmp.file("images"), idx_bytes({2051, 2, 2, 2}, 8 + 3));
    CHECK(has(error_naming(tmp.file("images"), [&] { read_idx_images(tmp.file("images")); }),
              "3 unexpected bytes after the 2 images of 2 x 2 pixels"));
    write_file(tmp.file("labels"), idx_bytes({2049, 2}, 2 + 1));
    CHECK(has(error_naming(tmp.file("labels"), [&] { read_idx_labels(tmp.file("labels")); }),
              "1 unexpected bytes after the 2 labels"));
}

TEST_CASE("images need positive rows and cols, while a count of 0 is fine") {
    test::TempDir tmp;
    write_file(tmp.file("no-rows"), idx_bytes({2051, 1, 0, 28}, 0));
    CHECK(has(error_naming(tmp.file("no-rows"), [&] { read_idx_images(tmp.file("no-rows")); }),
              "1 images of 0 x 28 pixels: rows and cols must be positive"));
    write_file(tmp.file("no-cols"), idx_bytes({2051, 0, 28, 0}, 0));
    CHECK(
        has(error_naming(tmp.file("no-cols"), [&] { read_idx_images(tmp.file("no-cols")); }), "rows and cols must be positive"));
    CHECK_THROWS_AS(write_idx_images(tmp.file("w"), IdxImages{0, 0, 28, {}}), std::invalid_argument);
    CHECK_FALSE(fs::exists(tmp.file("w")));
}

TEST_CASE("the writers refuse images whose pixels do not match their size") {
    test::TempDir tmp;
    IdxImages images = pattern_images(2, 3, 3);
    images.pixels.pop_back();
    CHECK_THROWS_AS(write_idx_images(tmp.file("w"), images), std::invalid_argument);
    CHECK_FALSE(fs::exists(tmp.file("w")));
    // an unwritable target is reported, leaving no temporary file behind
    const std::string in_missing_folder = tmp.file("no/such/folder/images");
    CHECK(has(error_naming(in_missing_folder, [&] { write_idx_images(in_missing_folder, pattern_images(1, 2, 2)); }),
              "cannot write"));
}

TEST_CASE("corrupt or cut gzip data is reported as such") {
    test::TempDir tmp;
    write_gzip(tmp.file("ok.gz"), idx_bytes({2051, 20, 28, 28}, 20 * 28 * 28));
    const std::string gz = read_file(tmp.file("ok.gz"));

    std::string flipped = gz;
    for (std::size_t i = gz.size() / 2; i < gz.size() / 2 + 16; ++i) flipped[i] = static_cast<char>(~flipped[i]);
    write_file(tmp.file("flipped.gz"), flipped);
    CHECK(has(error_naming(tmp.file("flipped.gz"), [&] { read_idx_images(tmp.file("flipped.gz")); }), "corrupt gzip data"));

    write_file(tmp.file("half.gz"), gz.substr(0, gz.size() / 2));
    const std::string half = error_naming(tmp.file("half.gz"), [&] { read_idx_images(tmp.file("half.gz")); });
    CHECK(has(half, "truncated"));
    CHECK(has(half, "the gzip stream is cut short"));

    // all pixels decode, but the CRC trailer that would vouch for them is gone
    write_file(tmp.file("no-trailer.gz"), gz.substr(0, gz.size() - 8));
    CHECK(has(error_naming(tmp.file("no-trailer.gz"), [&] { read_idx_images(tmp.file("no-trailer.gz")); }),
              "the gzip stream is cut short"));
}

TEST_CASE("gzip data followed by anything but another gzip member is rejected") {
    test::TempDir tmp;
    const std::string plain = idx_bytes({2051, 3, 2, 2}, 12);
    write_gzip(tmp.file("ok.gz"), plain);
    const std::string gz = read_file(tmp.file("ok.gz"));

    write_file(tmp.file("junk.gz"), gz + "junk");
    CHECK(has(error_naming(tmp.file("junk.gz"), [&] { read_idx_images(tmp.file("junk.gz")); }),
              "4 bytes of trailing garbage after the gzip stream"));
    write_file(tmp.file("one-byte.gz"), gz + "\x1f");
    CHECK(has(error_naming(tmp.file("one-byte.gz"), [&] { read_idx_images(tmp.file("one-byte.gz")); }),
              "1 bytes of trailing garbage"));
    write_file(tmp.file("zeros.gz"), gz + std::string(512, '\0'));
    CHECK(
        has(error_naming(tmp.file("zeros.gz"), [&] { read_idx_images(tmp.file("zeros.gz")); }), "512 bytes of trailing garbage"));

    // Concatenated members are one valid gzip stream (gzip -c a b > ab.gz).
    write_gzip(tmp.file("head.gz"), plain.substr(0, 10));
    write_gzip(tmp.file("tail.gz"), plain.substr(10));
    write_file(tmp.file("two-members.gz"), read_file(tmp.file("head.gz")) + read_file(tmp.file("tail.gz")));
    CHECK(read_idx_images(tmp.file("two-members.gz")).pixels == read_idx_images(tmp.file("ok.gz")).pixels);
    // A second member that decodes to more bytes is trailing data, as in a plain file.
    write_file(tmp.file("extra-member.gz"), gz + read_file(tmp.file("tail.gz")));
    CHECK(has(error_naming(tmp.file("extra-member.gz"), [&] { read_idx_images(tmp.file("extra-member.gz")); }),
              "unexpected bytes after the 3 images"));
}

namespace {

std::size_t open_descriptors() {
    return static_cast<std::size_t>(std::distance(fs::directory_iterator("/proc/self/fd"), fs::directory_iterator()));
}

}  // namespace

TEST_CASE("a rejected IDX file leaves no descriptor or zlib state behind") {
    test::TempDir tmp;
    write_file(tmp.file("wrong-magic"), idx_bytes({2049, 3}, 3));
    write_file(tmp.file("truncated"), idx_bytes({2051, 7, 28, 28}, 10));
    write_gzip(tmp.file("corrupt.gz"), idx_bytes({2051, 20, 28, 28}, 20 * 28 * 28));
    std::string corrupt = read_file(tmp.file("corrupt.gz"));
    for (std::size_t i = corrupt.size() / 2; i < corrupt.size() / 2 + 16; ++i) corrupt[i] = static_cast<char>(~corrupt[i]);
    write_file(tmp.file("corrupt.gz"), corrupt);
    fs::create_directory(tmp.file("folder"));

    const std::size_t before = open_descriptors();
    std::size_t rejected = 0;
    for (int i = 0; i < 50; ++i) {
        for (const char* name : {"wrong-magic", "truncated", "corrupt.gz", "folder"}) {
            try {
                read_idx_images(tmp.file(name));
            } catch (const std::runtime_error&) {
                ++rejected;
            }
        }
    }
    CHECK(rejected == 200);
    CHECK(open_descriptors() == before);
}

TEST_CASE("load_dataset checks the image size and one label per image") {
    test::TempDir tmp;
    write_idx_images(tmp.file("images"), pattern_images(7, 28, 28));
    write_idx_labels(tmp.file("labels"), std::vector<std::uint8_t>(7, 4));
    const Dataset d = load_dataset(tmp.file("images"), tmp.file("labels"));
    CHECK(d.images.count == 7);
    CHECK(d.labels == std::vector<std::uint8_t>(7, 4));

    write_idx_images(tmp.file("small"), pattern_images(7, 5, 4));
    const std::string size = error_naming(tmp.file("small"), [&] { load_dataset(tmp.file("small"), tmp.file("labels")); });
    CHECK(has(size, "images of 5 x 4 pixels, expected 28 x 28"));
    CHECK(load_dataset(tmp.file("small"), tmp.file("labels"), 5, 4).images.pixels == pattern_images(7, 5, 4).pixels);

    write_idx_labels(tmp.file("more"), std::vector<std::uint8_t>(9, 1));
    const std::string count = error_naming(tmp.file("more"), [&] { load_dataset(tmp.file("images"), tmp.file("more")); });
    CHECK(has(count, "holds 9 labels but '" + tmp.file("images") + "' holds 7 images"));
}

TEST_CASE("copy_images gathers rows by index as floats in [0, 1]") {
    IdxImages images = pattern_images(3, 5, 4);
    images.pixels[2 * 20 + 0] = 255;
    images.pixels[2 * 20 + 1] = 0;
    const std::size_t indices[] = {2, 0, 2};
    Tensor out = Tensor::from_shape({3, 20});
    copy_images(images, indices, 3, out);
    for (std::size_t r = 0; r < 3; ++r) {
        for (std::size_t j = 0; j < 20; ++j) {
            CAPTURE(r);
            CAPTURE(j);
            CHECK(out(r, j) == static_cast<float>(images.pixels[indices[r] * 20 + j]) / 255.f);
        }
    }
    CHECK(out(0, 0) == 1.f);
    CHECK(out(2, 1) == 0.f);

    Tensor empty = Tensor::from_shape({0, 20});
    copy_images(images, nullptr, 0, empty);
    CHECK(empty.size() == 0);
}

TEST_CASE("copy_images rejects a bad index or output shape and leaves the output untouched") {
    const IdxImages images = pattern_images(3, 5, 4);
    Tensor out = Tensor::from_shape({2, 20});
    out.fill(-1.f);
    const std::size_t bad_index[] = {0, 3};
    CHECK_THROWS_AS(copy_images(images, bad_index, 2, out), std::out_of_range);
    CHECK(out(0, 0) == -1.f);

    const std::size_t fine[] = {0, 1};
    Tensor narrow = Tensor::from_shape({2, 19}), short_batch = Tensor::from_shape({1, 20});
    CHECK_THROWS_AS(copy_images(images, fine, 2, narrow), ShapeError);
    CHECK_THROWS_AS(copy_images(images, fine, 2, short_batch), ShapeError);
    copy_images(images, fine, 2, out);
    CHECK(out(1, 0) == static_cast<float>(images.pixels[20]) / 255.f);
}
