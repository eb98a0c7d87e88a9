// What the libFuzzer harnesses share: the readers take a path, so each input
// becomes a file, kept in memory (memfd) and reached as /proc/self/fd/N.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#include <sys/mman.h>
#include <unistd.h>

#include <zlib.h>

#include <xgrad/io/idx.hpp>

namespace fuzz {

// Replaces the file's contents with `size` bytes; returns its path.
inline const std::string& as_file(const void* data, std::size_t size) {
    static const int fd = memfd_create("xgrad-fuzz", 0);
    static const std::string path = "/proc/self/fd/" + std::to_string(fd);
    if (fd < 0 || ftruncate(fd, 0) != 0 || (size > 0 && pwrite(fd, data, size, 0) != static_cast<ssize_t>(size))) {
        throw std::logic_error("fuzz: cannot fill the in-memory file");
    }
    return path;
}

// Archive inputs start with a mode byte: odd means "append the right
// CRC-32", so that mutations reach the parser behind the checksum; even
// means "the rest as it is".
inline std::string archive_bytes(const std::uint8_t* data, std::size_t size) {
    if (size == 0) return {};
    std::string bytes(reinterpret_cast<const char*>(data) + 1, size - 1);
    if (data[0] & 1) {
        const auto crc = static_cast<std::uint32_t>(crc32_z(0L, reinterpret_cast<const Bytef*>(bytes.data()), bytes.size()));
        bytes.append(reinterpret_cast<const char*>(&crc), sizeof crc);
    }
    return bytes;
}

// Both IDX readers on the file at path; a rejection is a std::runtime_error,
// anything else (a crash, a leak, another exception) is a finding.
inline void read_as_idx(const std::string& path) {
    try {
        xgrad::read_idx_images(path);
    } catch (const std::runtime_error&) {
    }
    try {
        xgrad::read_idx_labels(path);
    } catch (const std::runtime_error&) {
    }
}

}  // namespace fuzz
