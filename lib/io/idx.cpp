#include <xgrad/io/idx.hpp>

#include <xgrad/io/atomic_file.hpp>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <stdexcept>

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

namespace xgrad {
namespace {

constexpr std::uint32_t kImagesMagic = 2051, kLabelsMagic = 2049;
// Bounds the memory a header can make us commit before the data proves to be there.
constexpr std::size_t kChunk = std::size_t(1) << 20;
constexpr std::size_t kMaxReserve = std::size_t(64) << 20;  // one allocation for (Fashion-)MNIST's 47 MB

const char* kind_of(std::uint32_t magic) { return magic == kImagesMagic ? "IDX images" : "IDX labels"; }

// A file descriptor closed when it goes out of scope, also when a
// constructor that opened it throws.
class Descriptor {
public:
    explicit Descriptor(int fd) : fd_(fd) {}
    ~Descriptor() {
        if (fd_ >= 0) ::close(fd_);
    }
    Descriptor(const Descriptor&) = delete;
    Descriptor& operator=(const Descriptor&) = delete;
    int get() const { return fd_; }

private:
    int fd_;
};

// zlib's inflate state, released by its destructor. Not gzread: that
// silently ignores bytes after the last gzip member.
class Inflater {
public:
    Inflater() {
        if (inflateInit2(&stream_, 15 + 16) != Z_OK) throw std::bad_alloc();  // 15 + 16: gzip wrapper, 32 KiB window
    }
    ~Inflater() { inflateEnd(&stream_); }
    Inflater(const Inflater&) = delete;
    Inflater& operator=(const Inflater&) = delete;
    z_stream& operator*() { return stream_; }

private:
    z_stream stream_{};
};

// One IDX file open for reading, plain or gzipped (told by the gzip magic
// bytes, as gzopen does); every failure names the file and what was expected.
class IdxReader {
public:
    IdxReader(const std::string& path, std::uint32_t magic)
        : path_(path), kind_(kind_of(magic)), fd_(::open(path.c_str(), O_RDONLY | O_CLOEXEC)), input_(new std::uint8_t[kBuffer]) {
        if (fd_.get() < 0)
            throw std::runtime_error("xgrad: cannot open " + kind_ + " file '" + path + "': " + std::strerror(errno));
        struct stat st;
        if (::fstat(fd_.get(), &st) == 0 && S_ISREG(st.st_mode)) file_size_ = static_cast<std::size_t>(st.st_size);
        while (input_size_ < 2 && refill_more()) {
        }
        if (input_size_ >= 2 && input_[0] == 0x1f && input_[1] == 0x8b) {
            inflater_ = std::make_unique<Inflater>();
            (**inflater_).next_in = input_.get();
            (**inflater_).avail_in = static_cast<uInt>(input_size_);
        }
        expect_magic(magic);
    }

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
        // No more than the file can hold: gzip expands at most 1032-fold.
        const std::size_t expansion = inflater_ ? 1032 : 1;
        const std::size_t ceiling = file_size_ > kMaxReserve / expansion ? kMaxReserve : file_size_ * expansion;
        data.reserve(std::min(size, ceiling));
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
        // Counting stops after one chunk: a gzip stream can expand without bound.
        std::size_t trailing = 0;
        std::array<std::uint8_t, 1 << 14> sink;
        while (trailing <= kChunk) {
            const std::size_t got = read_some(sink.data(), sink.size());
            if (got == 0) break;
            trailing += got;
        }
        if (trailing > kChunk) fail("more than " + std::to_string(kChunk) + " unexpected bytes after the " + what);
        if (trailing) fail(std::to_string(trailing) + " unexpected bytes after the " + what);
        // The data is whole but the gzip trailer holding its CRC is missing: unverified, so rejected.
        if (gzip_cut()) fail("truncated" + gzip_cut_note());
        return data;
    }

    [[noreturn]] void fail(const std::string& why) const {
        throw std::runtime_error("xgrad: '" + path_ + "' is not a valid " + kind_ + " file: " + why);
    }

private:
    static constexpr std::size_t kBuffer = std::size_t(1) << 17;

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
            fail("truncated: the file ends inside " + std::string(what) + " (expected " +
                 std::to_string(header_bytes_ - got + n) + " header bytes, found " + std::to_string(header_bytes_) + ")" +
                 gzip_cut_note());
        }
    }

    // Appends raw file bytes to the input buffer (which must have room);
    // false at the end of the file.
    bool refill_more() {
        for (;;) {
            const ssize_t got = ::read(fd_.get(), input_.get() + input_size_, kBuffer - input_size_);
            if (got >= 0) {
                input_size_ += static_cast<std::size_t>(got);
                return got > 0;
            }
            if (errno != EINTR)
                throw std::runtime_error("xgrad: cannot read " + kind_ + " file '" + path_ + "': " + std::strerror(errno));
        }
    }
    bool refill() {
        input_size_ = 0;
        input_used_ = 0;
        return refill_more();
    }

    // Fewer than n bytes only at the end of the data.
    std::size_t read_some(void* dst, std::size_t n) {
        return inflater_ ? inflate_some(static_cast<std::uint8_t*>(dst), n) : copy_some(static_cast<std::uint8_t*>(dst), n);
    }

    std::size_t copy_some(std::uint8_t* dst, std::size_t n) {
        std::size_t done = 0;
        while (done < n) {
            if (input_used_ == input_size_ && !refill()) break;
            const std::size_t take = std::min(n - done, input_size_ - input_used_);
            std::memcpy(dst + done, input_.get() + input_used_, take);
            input_used_ += take;
            done += take;
        }
        return done;
    }

    std::size_t inflate_some(std::uint8_t* dst, std::size_t n) {
        z_stream& z = **inflater_;
        z.next_out = dst;
        z.avail_out = static_cast<uInt>(n);  // n <= kChunk
        while (z.avail_out > 0 && !input_ended_) {
            if (member_ended_ && !next_member()) break;
            if (z.avail_in == 0) {
                if (!refill()) {
                    input_ended_ = true;
                    break;
                }
                z.next_in = input_.get();
                z.avail_in = static_cast<uInt>(input_size_);
            }
            const int code = inflate(&z, Z_NO_FLUSH);
            if (code == Z_STREAM_END) {
                member_ended_ = true;
            } else if (code == Z_MEM_ERROR) {
                throw std::bad_alloc();
            } else if (code != Z_OK && code != Z_BUF_ERROR) {
                fail(std::string("corrupt gzip data (") + (z.msg ? z.msg : "zlib error " + std::to_string(code)) + ")");
            }
        }
        return n - z.avail_out;
    }

    // After a gzip member: the next one (gzip allows concatenated members),
    // or the end of the file. Any other bytes are refused, as the plain
    // reader refuses bytes after the data.
    bool next_member() {
        z_stream& z = **inflater_;
        if (z.avail_in < 2) {
            // Keep an odd byte at the buffer's start, then read more behind it.
            if (z.avail_in == 1) input_[0] = *z.next_in;
            input_size_ = z.avail_in;
            while (input_size_ < 2 && refill_more()) {
            }
            z.next_in = input_.get();
            z.avail_in = static_cast<uInt>(input_size_);
        }
        if (z.avail_in == 0) {
            input_ended_ = true;
            return false;
        }
        if (z.avail_in < 2 || z.next_in[0] != 0x1f || z.next_in[1] != 0x8b) {
            std::size_t garbage = z.avail_in;
            while (refill()) garbage += input_size_;
            fail(std::to_string(garbage) + " bytes of trailing garbage after the gzip stream");
        }
        if (inflateReset(&z) != Z_OK) fail("corrupt gzip data (cannot restart inflate)");
        member_ended_ = false;
        return true;
    }

    bool gzip_cut() const { return inflater_ && input_ended_ && !member_ended_; }
    std::string gzip_cut_note() const { return gzip_cut() ? " (the gzip stream is cut short: unexpected end of file)" : ""; }

    std::string path_, kind_;
    Descriptor fd_;
    std::unique_ptr<std::uint8_t[]> input_;                            // kBuffer bytes
    std::size_t file_size_ = std::numeric_limits<std::size_t>::max();  // unknown unless a regular file
    std::size_t input_size_ = 0, input_used_ = 0;  // input_used_: plain files only (gzip keeps its place in the stream)
    std::unique_ptr<Inflater> inflater_;           // null for a plain file
    bool member_ended_ = false, input_ended_ = false;
    std::size_t header_bytes_ = 0;
};

void check_fits_u32(std::size_t value, const char* name, const std::string& path) {
    if (value > std::numeric_limits<std::uint32_t>::max()) {
        throw std::invalid_argument("xgrad: cannot write '" + path + "': " + name + " " + std::to_string(value) +
                                    " does not fit the IDX header's 32-bit field");
    }
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

namespace {

void check_image_dimensions(const std::string& path, std::size_t count, std::size_t rows, std::size_t cols) {
    check_fits_u32(count, "count", path);
    check_fits_u32(rows, "rows", path);
    check_fits_u32(cols, "cols", path);
    if (rows == 0 || cols == 0) {
        throw std::invalid_argument("xgrad: cannot write '" + path + "': images of " + std::to_string(rows) + " x " +
                                    std::to_string(cols) + " pixels (rows and cols must be positive)");
    }
}

std::string big_endian_header(std::vector<std::uint32_t> header) {
    for (auto& field : header) field = htonl(field);
    return std::string(reinterpret_cast<const char*>(header.data()), header.size() * sizeof header[0]);
}

void write_idx(const std::string& path, std::vector<std::uint32_t> header, const std::vector<std::uint8_t>& data) {
    write_file_atomically(path,
                          {big_endian_header(std::move(header)), {reinterpret_cast<const char*>(data.data()), data.size()}});
}

}  // namespace

void write_idx_images(const std::string& path, const IdxImages& images) {
    check_image_dimensions(path, images.count, images.rows, images.cols);
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

IdxImagesWriter::IdxImagesWriter(const std::string& path, std::size_t count, std::size_t rows, std::size_t cols)
    : file_((check_image_dimensions(path, count, rows, cols), path)), count_(count), image_bytes_(rows * cols) {
    file_.write(big_endian_header(
        {kImagesMagic, static_cast<std::uint32_t>(count), static_cast<std::uint32_t>(rows), static_cast<std::uint32_t>(cols)}));
}

void IdxImagesWriter::append(const std::uint8_t* pixels, std::size_t images) {
    if (images > count_ - written_) {
        throw std::invalid_argument("xgrad: '" + file_.path() + "': " + std::to_string(written_ + images) +
                                    " images appended to a file of " + std::to_string(count_));
    }
    file_.write({reinterpret_cast<const char*>(pixels), images * image_bytes_});
    written_ += images;
}

void IdxImagesWriter::commit() {
    if (written_ != count_) {
        throw std::logic_error("xgrad: '" + file_.path() + "': " + std::to_string(written_) + " of " + std::to_string(count_) +
                               " images written");
    }
    file_.commit();
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
