// safetensors files (https://github.com/huggingface/safetensors), the format
// PyTorch users exchange weights in: an 8-byte little-endian header length
// N, N bytes of JSON {name: {"dtype", "shape", "data_offsets": [begin, end]},
// "__metadata__": {...}}, then the raw little-endian data, the offsets
// counting from its start.
//
// A module's tensors are written under PyTorch's state-dict names and in its
// layouts, so that a torch.nn.Sequential of the same layers loads the file
// with load_state_dict(safetensors.torch.load_file(path)), and the reverse:
//   - names are xgrad's ("0.weight", "3.running_mean"): Sequential numbers
//     its layers as PyTorch does, and Linear (out, in), Conv2d (out, in, kH,
//     kW) and ConvTranspose2d (in, out, kH, kW) store their weights as PyTorch;
//   - a batch norm also gets "num_batches_tracked", an I64 scalar: written 0
//     (xgrad counts no batches; PyTorch only reads it for momentum=None),
//     optional on load, where its value is ignored;
//   - a layer with spectral norm stores its weight as "weight_orig", beside
//     "weight_u" and "weight_v", as torch.nn.utils.spectral_norm does.
// Everything else is written F32.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <xgrad/core/tensor.hpp>
#include <xgrad/nn/module.hpp>

namespace xgrad {

// Writes the module's parameters and buffers to `path` atomically (a
// temporary file renamed over it). Throws std::runtime_error naming the
// file and the tensor for a NaN or infinite value (nothing is written), and
// for what the file system refuses.
void save_safetensors(const Module& module, const std::string& path);

// Replaces the module's parameters and buffers by the file's. Every tensor
// the module has must be in the file with the same shape, and the file must
// hold no other (but "__metadata__" and the optional num_batches_tracked).
// Accepted dtypes: F32; F16 and BF16 (exact in float); F64, rounded to the
// nearest float (refused when that overflows); I64, when every value is
// exactly a float (|v| <= 2^24 or so). Values must be finite. Everything is
// read and checked before anything is copied: on any error (std::runtime_error
// naming the file and the tensor) the module is unchanged.
void load_safetensors(Module& module, const std::string& path);

// One tensor of a safetensors file, as read_safetensors gives it: the
// dtype as written, the shape, and the values, floats in `values` (F32, F16,
// BF16, F64 converted) or integers in `integers` (I64).
struct SafetensorsTensor {
    std::string dtype;
    Shape shape;
    Tensor values;
    std::vector<std::int64_t> integers;
};

// Reads and checks a whole file (the header's JSON, every dtype and shape,
// data ranges within the file and not overlapping); throws
// std::runtime_error naming the file and the tensor.
std::map<std::string, SafetensorsTensor> read_safetensors(const std::string& path);

// Writes named tensors as F32, atomically: what read_safetensors reads back,
// and safetensors.torch.load_file too (a noise batch, say, or an output to
// compare). Throws as save_safetensors does, and std::invalid_argument for
// an empty name or "__metadata__".
void write_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors);

}  // namespace xgrad
