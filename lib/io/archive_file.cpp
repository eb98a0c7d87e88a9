#include <xgrad/io/archive_file.hpp>

#include <xgrad/io/atomic_file.hpp>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>

#include <zlib.h>

namespace xgrad {
namespace {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the archive format is little-endian; add byte swapping here");

constexpr char kMagic[8] = {'X', 'G', 'R', 'A', 'D', 'A', 'R', 'C'};
constexpr std::uint32_t kVersion = 1;
constexpr std::uint8_t kTensor = 1, kText = 2;

template <class T>
void append(std::string& out, T value) {
    out.append(reinterpret_cast<const char*>(&value), sizeof(T));
}

// Reads the archive's bytes in order, failing with the file's name.
class Reader {
public:
    Reader(const std::string& bytes, const std::string& path) : bytes_(bytes), path_(path) {}

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
    std::size_t position() const { return pos_; }
    std::size_t remaining() const { return end_ - pos_; }
    // Entries end where the checksum starts.
    void stop_at(std::size_t end) { end_ = end; }
    [[noreturn]] void fail(const std::string& why) const {
        throw std::runtime_error("xgrad: '" + path_ + "' is not a valid xgrad archive: " + why);
    }

private:
    const std::string& bytes_;
    const std::string& path_;
    std::size_t pos_ = 0, end_ = bytes_.size();
};

// The element count of a tensor whose shape `dims` was read from a file, if
// its data fits in the reader's remaining bytes. Empty shapes are bounded
// too: (0, 2^63) holds no data, but its strides would overflow.
std::size_t checked_element_count(const std::uint64_t* dims, std::size_t rank, const Reader& reader, const std::string& name) {
    constexpr std::uint64_t kMaxExtent = PTRDIFF_MAX / sizeof(float);
    std::string shape = "(";
    for (std::size_t i = 0; i < rank; ++i) shape += (i ? ", " : "") + std::to_string(dims[i]);
    shape += ")";
    std::uint64_t extent = 1;  // the product of the nonzero dimensions
    bool empty = false;
    for (std::size_t i = 0; i < rank; ++i) {
        if (dims[i] == 0) {
            empty = true;
        } else if (extent > kMaxExtent / dims[i]) {
            reader.fail("tensor '" + name + "' has the impossible shape " + shape);
        } else {
            extent *= dims[i];
        }
    }
    const std::uint64_t count = empty ? 0 : extent;
    if (count > reader.remaining() / sizeof(float)) {
        reader.fail("tensor '" + name + "' of shape " + shape + " needs " + std::to_string(count * sizeof(float)) +
                    " bytes, the file has " + std::to_string(reader.remaining()) + " left");
    }
    return static_cast<std::size_t>(count);
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
        append(bytes, static_cast<std::uint64_t>(t.shape()[0]));
        append(bytes, static_cast<std::uint64_t>(t.shape()[1]));
        if (t.size() != 0) bytes.append(reinterpret_cast<const char*>(t.data()), t.size() * sizeof(float));
    }
    for (const auto& [name, text] : archive.texts()) {
        append(bytes, kText);
        append(bytes, static_cast<std::uint32_t>(name.size()));
        bytes += name;
        append(bytes, static_cast<std::uint64_t>(text.size()));
        bytes += text;
    }
    append(bytes, static_cast<std::uint32_t>(crc32_z(0L, reinterpret_cast<const Bytef*>(bytes.data()), bytes.size())));

    write_file_atomically(path, {bytes});
}

Archive read_archive(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("xgrad: cannot open archive '" + path + "': " + std::strerror(errno));
    if (!std::filesystem::is_regular_file(path)) throw std::runtime_error("xgrad: archive '" + path + "' is not a regular file");
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    Reader reader(bytes, path);

    if (std::memcmp(reader.take(sizeof kMagic, "the magic number"), kMagic, sizeof kMagic) != 0) {
        reader.fail("wrong magic number (expected \"XGRADARC\")");
    }
    const auto version = reader.read<std::uint32_t>("the version");
    if (version != kVersion) {
        reader.fail("format version " + std::to_string(version) + ", this build reads version " + std::to_string(kVersion));
    }
    if (bytes.size() < reader.position() + 8) reader.fail("truncated: the file ends inside the header");
    // The checksum comes first: the parser below then only ever sees bytes as
    // written, and damage reads as damage instead of as whatever a flipped
    // length field makes of the rest.
    const std::size_t body_end = bytes.size() - 4;
    std::uint32_t stored_crc;
    std::memcpy(&stored_crc, bytes.data() + body_end, 4);
    const auto actual_crc = static_cast<std::uint32_t>(crc32_z(0L, reinterpret_cast<const Bytef*>(bytes.data()), body_end));
    if (stored_crc != actual_crc) reader.fail("corrupt (CRC mismatch: the file is damaged, cut short or has bytes appended)");
    reader.stop_at(body_end);

    Archive archive;
    const auto count = reader.read<std::uint32_t>("the entry count");
    for (std::uint32_t e = 0; e < count; ++e) {
        const auto kind = reader.read<std::uint8_t>("an entry");
        const auto name_length = reader.read<std::uint32_t>("an entry name");
        const std::string name(reader.take(name_length, "an entry name"), name_length);
        if (kind == kTensor) {
            std::uint64_t dims[2];
            for (auto& d : dims) d = reader.read<std::uint64_t>("a tensor shape");
            const std::size_t elements = checked_element_count(dims, 2, reader, name);
            Tensor t({static_cast<std::size_t>(dims[0]), static_cast<std::size_t>(dims[1])});
            const char* data = reader.take(elements * sizeof(float), "tensor data");
            if (elements != 0) std::memcpy(t.data(), data, elements * sizeof(float));  // t.data() may be null when empty
            archive.put(name, std::move(t));
        } else if (kind == kText) {
            const auto length = reader.read<std::uint64_t>("a text length");
            archive.put_text(name, std::string(reader.take(length, "text data"), length));
        } else {
            reader.fail("entry '" + name + "' has unknown kind " + std::to_string(kind));
        }
    }
    if (reader.remaining() != 0) reader.fail(std::to_string(reader.remaining()) + " unexpected bytes after the last entry");
    return archive;
}

}  // namespace xgrad
