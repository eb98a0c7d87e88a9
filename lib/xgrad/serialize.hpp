// Archives: named tensors and texts in one binary file, for parameters,
// optimizer state and checkpoints.
//
// File format (version 1, all integers little-endian):
//   8 bytes   magic "XGRADARC"
//   u32       format version (1)
//   u32       number of entries
//   entries   u8 kind (1 = tensor, 2 = text), u32 name length, name bytes, then
//             tensor: u64 rows, u64 cols, rows*cols float32
//             text:   u64 length, bytes
//   u32       CRC-32 (zlib's) of every byte before it
// save() writes a temporary file beside the target, syncs it and renames it
// over the target, so a crash leaves either the old or the new file whole.
// load() rejects a foreign file, another version, truncation, trailing bytes
// and corruption, naming the file and what was wrong.
#pragma once

#include <map>
#include <string>

#include <xgrad/tensor.hpp>

namespace xgrad {

class Archive {
public:
    void put(const std::string& name, const Tensor& tensor);
    void put_text(const std::string& name, const std::string& text);
    bool contains(const std::string& name) const;
    // Throw std::out_of_range naming the missing entry.
    const Tensor& tensor(const std::string& name) const;
    const std::string& text(const std::string& name) const;

    void save(const std::string& path) const;
    static Archive load(const std::string& path);

private:
    std::map<std::string, Tensor> tensors_;
    std::map<std::string, std::string> texts_;
};

}  // namespace xgrad
