// IDX files, the format of MNIST and Fashion-MNIST
// (http://yann.lecun.com/exdb/mnist/).
//
// File format (all integers big-endian u32):
//   magic 2051 (0x00000803: u8 elements, 3 dimensions), count, rows, cols,
//         then count*rows*cols u8 pixels, image after image, each row-major
//   magic 2049 (0x00000801: u8 elements, 1 dimension), count,
//         then count u8 labels
// The readers take plain or gzipped files alike (told by the gzip magic, as
// gzopen does; concatenated gzip members are one stream), read the data in
// bounded chunks so a corrupt header cannot cause a huge allocation, and
// reject a wrong magic, truncation, trailing bytes (also after the gzip
// stream), zero dimensions and gzip corruption with a std::runtime_error
// naming the file and the problem, releasing everything they opened.
// Any count is accepted, including 0.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <xgrad/core/tensor.hpp>
#include <xgrad/io/atomic_file.hpp>

namespace xgrad {

struct IdxImages {
    std::size_t count = 0, rows = 0, cols = 0;
    std::vector<std::uint8_t> pixels;  // count*rows*cols bytes, image-major
};

IdxImages read_idx_images(const std::string& path);
std::vector<std::uint8_t> read_idx_labels(const std::string& path);

// Plain (not gzipped). The file is written beside the target, synced and
// renamed over it, so a crash leaves either the old or the new file whole.
// Throw std::invalid_argument for images whose pixels do not match their
// dimensions or whose dimensions do not fit the format's u32 fields.
void write_idx_images(const std::string& path, const IdxImages& images);
void write_idx_labels(const std::string& path, const std::vector<std::uint8_t>& labels);

// Writes an images file a few images at a time, for sets too large to hold
// in memory; atomic as above: the file appears under `path` only when
// commit() follows exactly `count` images, and destroying the writer before
// that removes what was written. The constructor throws as
// write_idx_images does for dimensions the format cannot hold.
class IdxImagesWriter {
public:
    IdxImagesWriter(const std::string& path, std::size_t count, std::size_t rows, std::size_t cols);
    // `images` images of rows*cols bytes each; throws std::invalid_argument
    // past `count`.
    void append(const std::uint8_t* pixels, std::size_t images);
    // Throws std::logic_error if fewer than `count` images were appended.
    void commit();

private:
    AtomicFile file_;
    std::size_t count_, image_bytes_, written_ = 0;
};

// The images and labels of one split, checked against each other (one label
// per image) and against the expected image size.
struct Dataset {
    IdxImages images;
    std::vector<std::uint8_t> labels;
};
Dataset load_dataset(const std::string& images_path, const std::string& labels_path, std::size_t rows = 28,
                     std::size_t cols = 28);

// Gathers the images indices[0..n) into the rows of out, a preallocated
// (n, rows*cols) tensor, as floats in [0, 1] (pixel / 255). Allocates
// nothing, so a training loop can fill the same minibatch buffer every step.
// Throws ShapeError if out has another shape, std::out_of_range for an index
// >= images.count.
void copy_images(const IdxImages& images, const std::size_t* indices, std::size_t n, Tensor& out);

}  // namespace xgrad
