#include <xgrad/io/archive_file.hpp>

#include <xgrad/io/atomic_file.hpp>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <stdexcept>

#include <zlib.h>

namespace xgrad {
namespace {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the archive format is little-endian; add byte swapping here");

constexpr char kMagic[8] = {'X', 'G', 'R', 'A', 'D', 'A', 'R', 'C'};
constexpr std::uint32_t kVersion = 3;
constexpr std::uint8_t kTensor = 1, kText = 2;
constexpr std::uint32_t kMaxRank = 32;

template <class T>
void append(std::string& out, T value) {
    out.append(reinterpret_cast<const char*>(&value), sizeof(T));
}

std::uint32_t crc_of(const char* data, std::size_t n) {
    return static_cast<std::uint32_t>(crc32_z(0L, reinterpret_cast<const Bytef*>(data), n));
}

// Reads the archive's bytes in order, failing with the file's name.
class Reader {
public:
    Reader(const std::string& bytes, std::size_t end, const std::string& path) : bytes_(bytes), end_(end), path_(path) {}

    template <class T>
    T read(const char* what) {
        T value;
        std::memcpy(&value, take(sizeof(T), what), sizeof(T));
        return value;
    }
    const char* take(std::size_t n, const char* what) {
        if (n > end_ - pos_) fail(std::string("truncated: the file ends inside ") + what);
        const char* p = bytes_.data() + pos_;
        pos_ += n;
        return p;
    }
    std::size_t remaining() const { return end_ - pos_; }
    [[noreturn]] void fail(const std::string& why) const {
        throw std::runtime_error("xgrad: '" + path_ + "' is not a valid xgrad archive: " + why);
    }

private:
    const std::string& bytes_;
    std::size_t end_;
    const std::string& path_;
    std::size_t pos_ = 0;
};

// The element count of a tensor whose shape `dims` was read from a file, if
// its data fits in the reader's remaining bytes. Empty shapes are bounded
// too: (0, 2^63) holds no data, but its strides would overflow.
std::size_t checked_element_count(const Shape& dims, const Reader& reader, const std::string& name) {
    constexpr std::uint64_t kMaxExtent = PTRDIFF_MAX / sizeof(float);
    std::uint64_t extent = 1;  // the product of the nonzero dimensions
    bool empty = false;
    for (std::size_t d : dims) {
        if (d == 0) {
            empty = true;
        } else if (extent > kMaxExtent / d) {
            reader.fail("tensor '" + name + "' has the impossible shape " + shape_string(dims));
        } else {
            extent *= d;
        }
    }
    const std::uint64_t count = empty ? 0 : extent;
    if (count > reader.remaining() / sizeof(float)) {
        reader.fail("tensor '" + name + "' of shape " + shape_string(dims) + " needs " + std::to_string(count * sizeof(float)) +
                    " bytes, the file has " + std::to_string(reader.remaining()) + " left");
    }
    return static_cast<std::size_t>(count);
}

Tensor read_tensor(Reader& reader, const std::string& name) {
    const auto rank = reader.read<std::uint32_t>("a tensor rank");
    if (rank > kMaxRank) reader.fail("tensor '" + name + "' has rank " + std::to_string(rank));
    Shape shape(rank);
    for (std::uint32_t d = 0; d < rank; ++d) {
        const auto size = reader.read<std::uint64_t>("a tensor shape");
        if (size > std::numeric_limits<std::size_t>::max()) reader.fail("tensor '" + name + "' is larger than memory");
        shape[d] = static_cast<std::size_t>(size);
    }
    const std::size_t count = checked_element_count(shape, reader, name);
    Tensor t = Tensor::from_shape(shape);
    const char* data = reader.take(count * sizeof(float), "tensor data");
    if (count > 0) std::memcpy(t.data(), data, count * sizeof(float));  // t.data() may be null when empty
    return t;
}

}  // namespace

void write_archive(const std::string& path, const Archive& archive) {
    std::string bytes(kMagic, sizeof kMagic);
    append(bytes, kVersion);
    append(bytes, static_cast<std::uint32_t>(archive.tensors().size() + archive.texts().size()));
    for (const auto& [name, t] : archive.tensors()) {
        append(bytes, kTensor);
        append(bytes, static_cast<std::uint32_t>(name.size()));
        bytes += name;
        append(bytes, static_cast<std::uint32_t>(t.dimension()));
        for (std::size_t size : t.shape()) append(bytes, static_cast<std::uint64_t>(size));
        if (t.size() > 0) bytes.append(reinterpret_cast<const char*>(t.data()), t.size() * sizeof(float));
    }
    for (const auto& [name, text] : archive.texts()) {
        append(bytes, kText);
        append(bytes, static_cast<std::uint32_t>(name.size()));
        bytes += name;
        append(bytes, static_cast<std::uint64_t>(text.size()));
        bytes += text;
    }
    append(bytes, crc_of(bytes.data(), bytes.size()));
    write_file_atomically(path, {bytes});
}

Archive read_archive(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("xgrad: cannot open archive '" + path + "': " + std::strerror(errno));
    if (!std::filesystem::is_regular_file(path)) throw std::runtime_error("xgrad: archive '" + path + "' is not a regular file");
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    Reader header(bytes, bytes.size(), path);

    if (std::memcmp(header.take(sizeof kMagic, "the magic number"), kMagic, sizeof kMagic) != 0) {
        header.fail("wrong magic number (expected \"XGRADARC\")");
    }
    const auto version = header.read<std::uint32_t>("the version");
    if (version != kVersion) {
        const char* writer = version == 1   ? " (written by xgrad 0.1)"
                             : version == 2 ? " (written by xgrad 0.2 with Linear weights (in, out))"
                                            : "";
        header.fail("format version " + std::to_string(version) + writer + "; this build reads version " +
                    std::to_string(kVersion));
    }
    // The checksum first: a damaged file then reads as corrupt, whatever
    // the damage would make of the entries.
    if (bytes.size() < sizeof kMagic + 4 + 4 + 4) header.fail("truncated: the file ends inside the header");
    const std::size_t body_end = bytes.size() - 4;
    std::uint32_t stored_crc;
    std::memcpy(&stored_crc, bytes.data() + body_end, 4);
    if (stored_crc != crc_of(bytes.data(), body_end)) {
        header.fail("corrupt (CRC mismatch: the file is damaged, cut short or has bytes appended)");
    }

    Reader reader(bytes, body_end, path);
    reader.take(sizeof kMagic + 4, "the header");
    Archive archive;
    const auto count = reader.read<std::uint32_t>("the entry count");
    for (std::uint32_t e = 0; e < count; ++e) {
        const auto kind = reader.read<std::uint8_t>("an entry");
        const auto name_length = reader.read<std::uint32_t>("an entry name");
        const std::string name(reader.take(name_length, "an entry name"), name_length);
        if (archive.contains(name)) reader.fail("entry '" + name + "' appears twice");
        if (kind == kTensor) {
            archive.put(name, read_tensor(reader, name));
        } else if (kind == kText) {
            const auto length = reader.read<std::uint64_t>("a text length");
            if (length > reader.remaining()) reader.fail("truncated: the file ends inside text data");
            archive.put_text(name, std::string(reader.take(static_cast<std::size_t>(length), "text data"), length));
        } else {
            reader.fail("entry '" + name + "' has unknown kind " + std::to_string(kind));
        }
    }
    if (reader.remaining() > 0) reader.fail(std::to_string(reader.remaining()) + " unexpected bytes after the last entry");
    return archive;
}

}  // namespace xgrad
