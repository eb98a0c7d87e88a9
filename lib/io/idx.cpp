#include <xgrad/io/idx.hpp>

#include "atomic_file.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <stdexcept>

#include <arpa/inet.h>
#include <zlib.h>

namespace xgrad {
namespace {

constexpr std::uint32_t kImagesMagic = 2051, kLabelsMagic = 2049;
// Bounds the memory a header can make us commit before the data proves to be there.
constexpr std::size_t kChunk = std::size_t(1) << 20;
constexpr std::size_t kMaxReserve = std::size_t(64) << 20;  // one allocation for (Fashion-)MNIST's 47 MB

const char* kind_of(std::uint32_t magic) { return magic == kImagesMagic ? "IDX images" : "IDX labels"; }

// One IDX file open for reading through zlib (plain or gzipped); every
// failure names the file and what was expected.
class IdxReader {
public:
    IdxReader(const std::string& path, std::uint32_t magic) : path_(path), kind_(kind_of(magic)) {
        errno = 0;
        gz_ = gzopen(path.c_str(), "rb");
        if (!gz_) {
            throw std::runtime_error("xgrad: cannot open " + kind_ + " file '" + path + "': " +
                                     (errno ? std::strerror(errno) : "out of memory"));
        }
        gzbuffer(gz_, 1 << 17);
        expect_magic(magic);
    }
    ~IdxReader() { gzclose(gz_); }
    IdxReader(const IdxReader&) = delete;
    IdxReader& operator=(const IdxReader&) = delete;

    // The header's dimension fields, after the magic.
    template <std::size_t N>
    std::array<std::size_t, N> dimensions(const char* names) {
        std::array<std::uint32_t, N> raw;
        read_exact(raw.data(), sizeof raw, names);
        std::array<std::size_t, N> dims;
        std::transform(raw.begin(), raw.end(), dims.begin(), [](std::uint32_t v) { return std::size_t(ntohl(v)); });
        return dims;
    }

    // The rest of the file, which must be exactly `size` bytes (`what` says
    // what they hold). Grows in bounded chunks: a corrupt header claiming
    // terabytes fails as truncated instead of allocating them.
    std::vector<std::uint8_t> payload(std::size_t size, const std::string& what) {
        std::vector<std::uint8_t> data;
        data.reserve(std::min(size, kMaxReserve));
        while (data.size() < size) {
            const std::size_t old = data.size(), want = std::min(kChunk, size - old);
            data.resize(old + want);
            const std::size_t got = read_some(data.data() + old, want);
            data.resize(old + got);
            if (got < want) {
                fail("truncated: the header promises " + what + " = " + std::to_string(size) + " bytes after the " +
                     std::to_string(header_bytes_) + "-byte header, found " + std::to_string(data.size()) + gzip_cut_note());
            }
        }
        std::size_t trailing = 0;
        std::array<std::uint8_t, 1 << 14> sink;
        while (const std::size_t got = read_some(sink.data(), sink.size())) trailing += got;
        if (trailing) fail(std::to_string(trailing) + " unexpected bytes after the " + what);
        // The data is whole but the gzip trailer holding its CRC is missing: unverified, so rejected.
        const std::string cut = gzip_cut_note();
        if (!cut.empty()) fail("truncated" + cut);
        return data;
    }

    [[noreturn]] void fail(const std::string& why) const {
        throw std::runtime_error("xgrad: '" + path_ + "' is not a valid " + kind_ + " file: " + why);
    }

private:
    void expect_magic(std::uint32_t expected) {
        std::uint32_t raw;
        read_exact(&raw, sizeof raw, "the magic number");
        const std::uint32_t found = ntohl(raw);
        if (found == expected) return;
        char hex[16];
        std::snprintf(hex, sizeof hex, "0x%08x", found);
        std::string why = "wrong magic number: expected " + std::to_string(expected) + " (" + kind_ + "), found " +
                          std::to_string(found) + " (" + hex + ")";
        if (found == kImagesMagic) why += "; this is an IDX images file: were the images and labels paths swapped?";
        if (found == kLabelsMagic) why += "; this is an IDX labels file: were the images and labels paths swapped?";
        fail(why);
    }

    void read_exact(void* dst, std::size_t n, const char* what) {
        const std::size_t got = read_some(dst, n);
        header_bytes_ += got;
        if (got < n) {
            fail("truncated: the file ends inside " + std::string(what) + " (expected " + std::to_string(header_bytes_ - got + n) +
                 " header bytes, found " + std::to_string(header_bytes_) + ")" + gzip_cut_note());
        }
    }

    // Fewer than n bytes only at the end of the data.
    std::size_t read_some(void* dst, std::size_t n) {
        const int got = gzread(gz_, dst, static_cast<unsigned>(n));
        if (got >= 0) return static_cast<std::size_t>(got);
        int code;
        const std::string message = zlib_message(&code);
        if (code == Z_ERRNO) {
            throw std::runtime_error("xgrad: cannot read " + kind_ + " file '" + path_ + "': " + message);
        }
        fail("corrupt gzip data (" + message + ")");
    }

    // zlib reports a gzip stream cut short as Z_BUF_ERROR only through gzerror.
    std::string gzip_cut_note() {
        int code;
        const std::string message = zlib_message(&code);
        return code == Z_BUF_ERROR ? " (the gzip stream is cut short: " + message + ")" : "";
    }

    std::string zlib_message(int* code) {
        std::string message = gzerror(gz_, code);
        const std::string prefix = path_ + ": ";  // zlib prefixes the path, which our messages already name
        if (message.compare(0, prefix.size(), prefix) == 0) message.erase(0, prefix.size());
        return message;
    }

    std::string path_, kind_;
    gzFile gz_ = nullptr;
    std::size_t header_bytes_ = 0;
};

void check_fits_u32(std::size_t value, const char* name, const std::string& path) {
    if (value > std::numeric_limits<std::uint32_t>::max()) {
        throw std::invalid_argument("xgrad: cannot write '" + path + "': " + name + " " + std::to_string(value) +
                                    " does not fit the IDX header's 32-bit field");
    }
}

void write_idx(const std::string& path, std::vector<std::uint32_t> header, const std::vector<std::uint8_t>& data) {
    for (auto& field : header) field = htonl(field);
    detail::write_file_atomically(path, {{reinterpret_cast<const char*>(header.data()), header.size() * sizeof header[0]},
                                         {reinterpret_cast<const char*>(data.data()), data.size()}});
}

}  // namespace

IdxImages read_idx_images(const std::string& path) {
    IdxReader in(path, kImagesMagic);
    IdxImages images;
    const auto dims = in.dimensions<3>("the header (count, rows, cols)");
    images.count = dims[0];
    images.rows = dims[1];
    images.cols = dims[2];
    const std::string shape = std::to_string(images.count) + " images of " + std::to_string(images.rows) + " x " +
                              std::to_string(images.cols) + " pixels";
    if (images.rows == 0 || images.cols == 0) in.fail("the header declares " + shape + ": rows and cols must be positive");
    const std::size_t image_bytes = images.rows * images.cols;  // two u32: cannot overflow
    if (images.count > std::numeric_limits<std::size_t>::max() / image_bytes) {
        in.fail("the header declares " + shape + ", more bytes than any file holds");
    }
    images.pixels = in.payload(images.count * image_bytes, shape);
    return images;
}

std::vector<std::uint8_t> read_idx_labels(const std::string& path) {
    IdxReader in(path, kLabelsMagic);
    const std::size_t count = in.dimensions<1>("the header (count)")[0];
    return in.payload(count, std::to_string(count) + " labels");
}

void write_idx_images(const std::string& path, const IdxImages& images) {
    check_fits_u32(images.count, "count", path);
    check_fits_u32(images.rows, "rows", path);
    check_fits_u32(images.cols, "cols", path);
    if (images.rows == 0 || images.cols == 0) {
        throw std::invalid_argument("xgrad: cannot write '" + path + "': images of " + std::to_string(images.rows) + " x " +
                                    std::to_string(images.cols) + " pixels (rows and cols must be positive)");
    }
    if (images.pixels.size() != images.count * images.rows * images.cols) {
        throw std::invalid_argument("xgrad: cannot write '" + path + "': " + std::to_string(images.pixels.size()) +
                                    " pixel bytes for " + std::to_string(images.count) + " images of " +
                                    std::to_string(images.rows) + " x " + std::to_string(images.cols));
    }
    write_idx(path,
              {kImagesMagic, static_cast<std::uint32_t>(images.count), static_cast<std::uint32_t>(images.rows),
               static_cast<std::uint32_t>(images.cols)},
              images.pixels);
}

void write_idx_labels(const std::string& path, const std::vector<std::uint8_t>& labels) {
    check_fits_u32(labels.size(), "count", path);
    write_idx(path, {kLabelsMagic, static_cast<std::uint32_t>(labels.size())}, labels);
}

Dataset load_dataset(const std::string& images_path, const std::string& labels_path, std::size_t rows, std::size_t cols) {
    Dataset d{read_idx_images(images_path), read_idx_labels(labels_path)};
    if (d.images.rows != rows || d.images.cols != cols) {
        throw std::runtime_error("xgrad: '" + images_path + "' holds images of " + std::to_string(d.images.rows) + " x " +
                                 std::to_string(d.images.cols) + " pixels, expected " + std::to_string(rows) + " x " +
                                 std::to_string(cols));
    }
    if (d.labels.size() != d.images.count) {
        throw std::runtime_error("xgrad: '" + labels_path + "' holds " + std::to_string(d.labels.size()) + " labels but '" +
                                 images_path + "' holds " + std::to_string(d.images.count) + " images");
    }
    return d;
}

void copy_images(const IdxImages& images, const std::size_t* indices, std::size_t n, Tensor& out) {
    const std::size_t dim = images.rows * images.cols;
    if (out.shape() != Shape{n, dim}) {
        throw ShapeError("copy_images: out is " + shape_string(out) + ", expected " + shape_string(Shape{n, dim}));
    }
    if (images.pixels.size() != images.count * dim) {
        throw std::invalid_argument("copy_images: " + std::to_string(images.pixels.size()) + " pixel bytes for " +
                                    std::to_string(images.count) + " images of " + std::to_string(dim) + " pixels");
    }
    if (n > 0 && indices == nullptr) throw std::invalid_argument("copy_images: indices is null");
    // Validate every index first, so a bad one leaves out untouched.
    for (std::size_t i = 0; i < n; ++i) {
        if (indices[i] >= images.count) {
            throw std::out_of_range("copy_images: index " + std::to_string(indices[i]) + " (position " + std::to_string(i) +
                                    ") is out of range for " + std::to_string(images.count) + " images");
        }
    }
    for (std::size_t i = 0; i < n; ++i) {
        const std::uint8_t* src = images.pixels.data() + indices[i] * dim;
        float* dst = out.data() + i * dim;
        for (std::size_t j = 0; j < dim; ++j) dst[j] = static_cast<float>(src[j]) / 255.f;
    }
}

}  // namespace xgrad
