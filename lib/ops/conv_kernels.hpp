// Internal to lib/ops: the im2col + GEMM convolution engine behind conv2d
// and conv_transpose2d (lib/ops/conv.cpp), float32, NCHW.
//
// Raw float pointers in, raw float pointers out; the products go through
// core's gemm (lib/xgrad/core/kernels.hpp), the chunks of images through
// xgrad's parallel_for.
//
// ---------------------------------------------------------------------------
// Model
// ---------------------------------------------------------------------------
// Every function works on ONE geometry, always described in the conv2d
// direction:
//
//     "image side"  x : (batch, in_c,  in_h,  in_w)     NCHW
//     "column side" y : (batch, out_c, out_h, out_w)    NCHW
//     weight        w : (out_c, in_c, kernel_h, kernel_w)  (OIHW, PyTorch conv2d)
//
//   y[n,o,oh,ow] = b[o] + sum_{c,kh,kw} w[o,c,kh,kw] *
//                  x[n, c, oh*stride_h - pad_h + kh*dil_h, ow*stride_w - pad_w + kw*dil_w]
//   (taps outside the image read zero).
//
// A transposed convolution is the adjoint of that conv2d: its input is the
// column side, its output the image side, and its weight (C_in_t, C_out_t,
// kH, kW) (PyTorch ConvTranspose2d layout) is bit-for-bit the same buffer as
// the OIHW weight above with out_c = C_in_t, in_c = C_out_t. So
//   conv_transpose2d forward       == conv2d backward-data (+ bias on image side)
//   conv_transpose2d backward-data == conv2d forward (no bias)
//   conv_transpose2d backward-w    == conv2d backward-weight with the roles of
//                                     the two tensors swapped.
// Build the geometry with Conv2dGeometry::conv_transpose2d(...), which takes
// the PyTorch arguments (incl. output_padding) and fills the conv2d view.
//
// ---------------------------------------------------------------------------
// Execution strategy (measured; docs/design.md, "Convolutions")
// ---------------------------------------------------------------------------
// Images are processed in blocks of B images. The column buffer of a block is
// K x (B*P) (K = in_c*kh*kw, P = out_h*out_w), so each block is ONE sgemm
// with a wide N = B*P instead of B skinny ones.
//
// For B > 1 (small outputs: P < 128) the block's columns are interleaved,
// pixel p of image n at column p*B + n, the images innermost: im2col and
// col2im then move runs of B floats (one vector for the DCGAN's B = 8)
// instead of a 7x7 plane's 7-float rows. The block's images are interleaved
// (c, h, w, n) on the image side and repacked to (out_c, P*B) on the column
// side, with bias and accumulation fused into the repack.
//
// For B == 1 there is no repack: the GEMM reads/writes the user's tensors
// directly. Its im2col goes through "phase planes" of the zero-padded image
// (one deinterleave per image, then every tap is a contiguous 2-D window)
// unless the geometry is stride 1 / no padding with wide rows; col2im
// scatters directly. See conv_kernels.cpp for the measurements behind these
// choices.
//
// Every pass splits the batch into `num_chunks` contiguous ranges of images,
// run by xgrad's parallel_for; each chunk owns its own slice of the scratch
// buffer (and for the weight gradient its own partial dW, reduced at the end
// in a fixed order), so the result does not depend on which thread runs which
// chunk and the code needs no locks.
//
// ---------------------------------------------------------------------------
// Memory
// ---------------------------------------------------------------------------
// Nothing here allocates. Every function takes a ConvScratch that the caller
// owns; conv*_scratch_floats() report the exact size (in floats) for a given
// geometry and number of chunks. Scratch content on entry is irrelevant (it
// is never assumed to be zeroed). 64-byte alignment of all buffers is
// recommended (not required).
//
// "accumulate" = add the result into the destination (autograd gradient
// accumulation). accumulate == false is the fast path (sgemm beta = 0, no
// read of the old destination).
//
// Note: OpenBLAS 0.3.21 itself allocates inside sgemm in two cases measured
// in docs/design.md: one malloc per call when OpenBLAS runs more than one thread,
// and one per call for an N == 1 (single-column, non-transposed B) product
// with a long K. With OpenBLAS at 1 thread and B*P > 1 the engine's calls
// allocate nothing; the engine adds no allocation of its own.
#pragma once

#include <cstddef>
#include <optional>

namespace xgrad {
namespace conv {

// ---------------------------------------------------------------------------
// Geometry
// ---------------------------------------------------------------------------
struct Conv2dGeometry {
    // image side (conv2d input / conv_transpose2d output)
    int batch = 1, in_c = 1, in_h = 1, in_w = 1;
    // column side (conv2d output / conv_transpose2d input)
    int out_c = 1, out_h = 1, out_w = 1;
    int kernel_h = 1, kernel_w = 1;
    int stride_h = 1, stride_w = 1;
    int pad_h = 0, pad_w = 0;
    int dil_h = 1, dil_w = 1;

    // conv2d output size formula (PyTorch / floor convention).
    // Floor division: a kernel wider than the padded input gives <= 0 (invalid),
    // not the 1 that C++'s truncating division would give.
    static int conv_out_size(int in, int k, int stride, int pad, int dil) {
        const int span = in + 2 * pad - dil * (k - 1) - 1;
        return span < 0 ? 0 : span / stride + 1;
    }
    // conv_transpose2d output size formula (PyTorch).
    static int conv_transpose_out_size(int in, int k, int stride, int pad, int dil, int output_padding) {
        return (in - 1) * stride - 2 * pad + dil * (k - 1) + output_padding + 1;
    }

    // conv2d(x: (N, C_in, H, W), w: (C_out, C_in, kH, kW)).
    static Conv2dGeometry conv2d(int N, int C_in, int H, int W, int C_out, int kH, int kW, int stride_h, int stride_w, int pad_h,
                                 int pad_w, int dil_h = 1, int dil_w = 1);
    // conv_transpose2d(x: (N, C_in, H, W), w: (C_in, C_out, kH, kW)) with PyTorch's
    // arguments. Output (N, C_out, H', W') with H' = conv_transpose_out_size(...).
    // In the returned geometry: out_* = (C_in, H, W) of the transposed input,
    // in_* = (C_out, H', W') of the transposed output.
    static Conv2dGeometry conv_transpose2d(int N, int C_in, int H, int W, int C_out, int kH, int kW, int stride_h, int stride_w,
                                           int pad_h, int pad_w, int out_pad_h = 0, int out_pad_w = 0, int dil_h = 1,
                                           int dil_w = 1);

    // Throws std::invalid_argument with a readable message if inconsistent.
    // (out_h may be smaller than conv_out_size(): this is what output_padding
    // >= stride produces for a transposed conv; larger is an error.)
    void validate() const;

    std::size_t in_plane() const { return std::size_t(in_h) * std::size_t(in_w); }
    std::size_t out_plane() const { return std::size_t(out_h) * std::size_t(out_w); }  // P
    std::size_t col_rows() const {                                                     // K = in_c * kh * kw
        return std::size_t(in_c) * std::size_t(kernel_h) * std::size_t(kernel_w);
    }
    std::size_t weight_size() const { return std::size_t(out_c) * col_rows(); }
    // true when im2col is the identity (1x1 kernel, stride 1, no padding).
    bool im2col_is_identity() const {
        return kernel_h == 1 && kernel_w == 1 && stride_h == 1 && stride_w == 1 && pad_h == 0 && pad_w == 0;
    }
};

// ---------------------------------------------------------------------------
// Scratch
// ---------------------------------------------------------------------------
struct ConvScratch {
    float* data = nullptr;  // caller-owned
    std::size_t size = 0;   // in floats; checked against the requirement
};

enum class ConvPass { forward, backward_data, backward_weight };

// Exact scratch (floats) for one pass of conv2d on `g` split into num_chunks
// chunks of images.
std::size_t conv2d_scratch_floats(const Conv2dGeometry& g, ConvPass pass, int num_chunks);
// Same for the transposed conv passes (forward = conv2d backward_data, etc.).
std::size_t conv_transpose2d_scratch_floats(const Conv2dGeometry& g, ConvPass pass, int num_chunks);

// ---------------------------------------------------------------------------
// conv2d. Each pass runs min(num_chunks, batch) chunks of images over
// xgrad's threads; `s` must hold *_scratch_floats(g, pass, num_chunks).
// ---------------------------------------------------------------------------
// y = conv2d(x, w) + b.   b may be null.   y is overwritten. With a
// rectifier slope, y is then rectified (relu for 0, leaky_relu for a slope
// > 0, by xgrad::simd's kernels: the same bits as those ops) block by block,
// while each block of images is still in cache.
void conv2d_forward(const float* x, const float* w, const float* b, float* y, const Conv2dGeometry& g, const ConvScratch& s,
                    int num_chunks, std::optional<float> rectifier_slope = std::nullopt);
// dx (=) conv2d_backward_data(dy, w).
void conv2d_backward_data(const float* dy, const float* w, float* dx, const Conv2dGeometry& g, const ConvScratch& s,
                          int num_chunks, bool accumulate);
// dw (=) sum_n dy_n * im2col(x_n)^T.
void conv2d_backward_weight(const float* dy, const float* x, float* dw, const Conv2dGeometry& g, const ConvScratch& s,
                            int num_chunks, bool accumulate);

// ---------------------------------------------------------------------------
// conv_transpose2d (g from Conv2dGeometry::conv_transpose2d)
// ---------------------------------------------------------------------------
// x: (N, g.out_c, g.out_h, g.out_w)   y: (N, g.in_c, g.in_h, g.in_w)
// w: (g.out_c, g.in_c, kh, kw) = PyTorch (C_in, C_out, kH, kW);  b: g.in_c or null.
void conv_transpose2d_forward(const float* x, const float* w, const float* b, float* y, const Conv2dGeometry& g,
                              const ConvScratch& s, int num_chunks);
void conv_transpose2d_backward_data(const float* dy, const float* w, float* dx, const Conv2dGeometry& g, const ConvScratch& s,
                                    int num_chunks, bool accumulate);
// dw (=) grad wrt w.
void conv_transpose2d_backward_weight(const float* dy, const float* x, float* dw, const Conv2dGeometry& g, const ConvScratch& s,
                                      int num_chunks, bool accumulate);

}  // namespace conv
}  // namespace xgrad
