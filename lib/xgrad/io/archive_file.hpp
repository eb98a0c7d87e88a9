// Archive files: an Archive (xgrad/core/archive.hpp) on disk, for
// parameters, optimizer state and checkpoints.
//
// File format (version 3, all integers little-endian):
//   8 bytes   magic "XGRADARC"
//   u32       format version (3)
//   u32       number of entries
//   entries   u8 kind (1 = tensor, 2 = text), u32 name length, name bytes, then
//             tensor: u32 rank, rank x u64 sizes, their product of float32 (row-major)
//             text:   u64 length, bytes
//   u32       CRC-32 (zlib's) of every byte before it
// Version 1 (xgrad 0.1: every tensor 2-D, "u64 rows, u64 cols") is refused
// with a message naming both versions: 0.1 checkpoints hold parameters of
// other shapes (a bias was a (1, n) matrix) and cannot resume 0.2 training.
// Version 2 has version 3's layout but was written while Linear kept its
// weight (in, out); it is refused too, because a reader cannot transpose
// it back safely: a square weight's shape does not tell, and optimizer
// moments and averaged weights are stored by index, not by layer.
// write_archive() writes a temporary file beside the target, syncs it and
// renames it over the target, so a crash leaves either the old or the new
// file whole. read_archive() checks the magic, the version and then the
// CRC before it parses any entry, so that damage, truncation and appended
// bytes read as "corrupt (CRC mismatch ...)"; behind a valid CRC it still
// bounds every shape (no overflowing extents, data within the file). Every
// rejection names the file and what was wrong.
#pragma once

#include <string>

#include <xgrad/core/archive.hpp>

namespace xgrad {

void write_archive(const std::string& path, const Archive& archive);
Archive read_archive(const std::string& path);

}  // namespace xgrad
