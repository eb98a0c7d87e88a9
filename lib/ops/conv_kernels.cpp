// conv_kernels.cpp - see conv_kernels.hpp for the model and the contract.
#include "conv_kernels.hpp"

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#include <xgrad/core/kernels.hpp>
#include <xgrad/core/parallel.hpp>
#include <xgrad/core/simd.hpp>

#if defined(__SSE__)
#include <xmmintrin.h>
#endif

namespace xgrad {
namespace conv {

namespace {

inline int ceil_div_nonneg(int a, int b) { return (a + b - 1) / b; }

// Range of output columns ow whose input column iw = ow*stride + off lies in
// [0, W): ow in [lo, hi). Hoisting this out of the inner loop removes the
// per-element bounds test: padding becomes two memset-like fills.
inline void valid_range(int off, int stride, int in, int out, int& lo, int& hi) {
    lo = off >= 0 ? 0 : ceil_div_nonneg(-off, stride);
    hi = (in - 1 - off) < 0 ? 0 : (in - 1 - off) / stride + 1;
    lo = std::min(lo, out);
    hi = std::min(hi, out);
    if (hi < lo) hi = lo;
}

constexpr std::size_t kAlign = 16;  // floats (64 bytes): keeps chunk slices cache-line aligned
inline std::size_t round_up(std::size_t v) { return (v + kAlign - 1) / kAlign * kAlign; }

// ---------------------------------------------------------------------------
// Phase planes ("polyphase" split of the zero-padded image).
//
// With stride s the taps of one kernel row read every s-th input pixel, and
// for small feature maps (7x7, 14x14) each output row is only a handful of
// pixels long: a direct im2col spends its time in loop overhead on 7-element
// strided gathers (measured 2.2 ms of a 10.5 ms DCGAN layer). Splitting the
// padded image once per image into s_h*s_w phase planes
//     Q[c][a][b][i][j] = xpad[c][i*s_h + a][j*s_w + b]
// turns every tap into a plain 2-D window of one phase plane:
//     col[(c,kh,kw)][oh][ow] = Q[c][kh*d_h % s_h][kw*d_w % s_w][oh + kh*d_h/s_h][ow + kw*d_w/s_w]
// i.e. OH contiguous copies of OW floats (done with two overlapping vector
// moves). Building Q is one extra pass over the image, which is kh*kw times
// smaller than the column buffer. (col2im through phase planes measured no
// faster than the direct scatter, whose adds are as short, so col2im
// scatters directly.)
// ---------------------------------------------------------------------------
struct PhaseDims {
    int Hq = 0, Wq = 0;
    std::size_t plane = 0;        // Hq * Wq
    std::size_t per_channel = 0;  // s_h * s_w * plane
};

inline PhaseDims phase_dims(const Conv2dGeometry& g) {
    PhaseDims d;
    d.Hq = ceil_div_nonneg(g.in_h + 2 * g.pad_h, g.stride_h);
    d.Wq = ceil_div_nonneg(g.in_w + 2 * g.pad_w, g.stride_w);
    d.plane = std::size_t(d.Hq) * std::size_t(d.Wq);
    d.per_channel = std::size_t(g.stride_h) * std::size_t(g.stride_w) * d.plane;
    return d;
}

// Direct im2col is already pure memcpy for stride 1 without padding on wide
// rows; everything else goes through phase planes (measured per image on the
// DCGAN 64->128 14->7 layer: 31.5 us direct, 8.0 + 11.6 us via phases; on a
// 3x3 s1 p1 64-channel 7x7 layer 23.2 vs 11.6 us).
inline bool use_phase_path(const Conv2dGeometry& g) {
    if (g.im2col_is_identity()) return false;
    const bool trivial = g.stride_h == 1 && g.stride_w == 1 && g.pad_h == 0 && g.pad_w == 0;
    return !(trivial && g.out_w >= 32);
}

// Copy n floats; for short n two overlapping fixed-size moves instead of a
// loop or a libc call (src and dst do not overlap each other).
inline void copy_short(float* d, const float* s, int n) {
    if (n >= 16) {
        std::memcpy(d, s, sizeof(float) * std::size_t(n));
    } else if (n >= 8) {
        float t0[8], t1[8];
        std::memcpy(t0, s, sizeof t0);
        std::memcpy(t1, s + n - 8, sizeof t1);
        std::memcpy(d, t0, sizeof t0);
        std::memcpy(d + n - 8, t1, sizeof t1);
    } else if (n >= 4) {
        float t0[4], t1[4];
        std::memcpy(t0, s, sizeof t0);
        std::memcpy(t1, s + n - 4, sizeof t1);
        std::memcpy(d, t0, sizeof t0);
        std::memcpy(d + n - 4, t1, sizeof t1);
    } else {
        for (int i = 0; i < n; ++i) d[i] = s[i];
    }
}

// Q <- phase planes of image x_n (zero where the padded image is padding).
void build_phases(const float* x, float* q, const Conv2dGeometry& g, const PhaseDims& pd) {
    const int H = g.in_h, W = g.in_w, sh = g.stride_h, sw = g.stride_w;
    for (int c = 0; c < g.in_c; ++c) {
        const float* xc = x + std::size_t(c) * H * W;
        float* qc = q + std::size_t(c) * pd.per_channel;
        for (int a = 0; a < sh; ++a)
            for (int i = 0; i < pd.Hq; ++i) {
                const int ih = i * sh + a - g.pad_h;
                if (ih < 0 || ih >= H) {
                    for (int b = 0; b < sw; ++b) {
                        float* row = qc + std::size_t(a * sw + b) * pd.plane + std::size_t(i) * pd.Wq;
                        std::fill(row, row + pd.Wq, 0.0f);
                    }
                    continue;
                }
                const float* src = xc + std::size_t(ih) * W;
                if (sw == 2) {
                    // Both column phases of this input row in one pass (the DCGAN
                    // case; per-phase loops would be only ~8 iterations long).
                    float* r0 = qc + std::size_t(a * 2) * pd.plane + std::size_t(i) * pd.Wq;
                    float* r1 = r0 + pd.plane;
                    for (int j = 0; j < pd.Wq; ++j) {
                        const int iw0 = 2 * j - g.pad_w, iw1 = iw0 + 1;
                        r0[j] = (iw0 >= 0 && iw0 < W) ? src[iw0] : 0.0f;
                        r1[j] = (iw1 >= 0 && iw1 < W) ? src[iw1] : 0.0f;
                    }
                    continue;
                }
                for (int b = 0; b < sw; ++b) {
                    float* row = qc + std::size_t(a * sw + b) * pd.plane + std::size_t(i) * pd.Wq;
                    // columns j of this phase that map to real pixels: iw = j*sw + b - pad_w
                    int j_lo, j_hi;
                    valid_range(b - g.pad_w, sw, W, pd.Wq, j_lo, j_hi);
                    const float* s = src + (b - g.pad_w);
                    for (int j = 0; j < j_lo; ++j) row[j] = 0.0f;
                    if (sw == 1)
                        std::memcpy(row + j_lo, s + j_lo, sizeof(float) * std::size_t(j_hi - j_lo));
                    else
                        for (int j = j_lo; j < j_hi; ++j) row[j] = s[j * sw];
                    for (int j = j_hi; j < pd.Wq; ++j) row[j] = 0.0f;
                }
            }
    }
}

void im2col_phases(const float* q, float* col, std::size_t ldc, const Conv2dGeometry& g, const PhaseDims& pd) {
    const int OH = g.out_h, OW = g.out_w, sh = g.stride_h, sw = g.stride_w;
    float* row = col;
    for (int c = 0; c < g.in_c; ++c) {
        const float* qc = q + std::size_t(c) * pd.per_channel;
        for (int kh = 0; kh < g.kernel_h; ++kh) {
            const int a = (kh * g.dil_h) % sh, i0 = (kh * g.dil_h) / sh;
            for (int kw = 0; kw < g.kernel_w; ++kw, row += ldc) {
                const int b = (kw * g.dil_w) % sw, j0 = (kw * g.dil_w) / sw;
                const float* src = qc + std::size_t(a * sw + b) * pd.plane + std::size_t(i0) * pd.Wq + j0;
                for (int oh = 0; oh < OH; ++oh) copy_short(row + std::size_t(oh) * OW, src + std::size_t(oh) * pd.Wq, OW);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// im2col and col2im over an image side whose pixels each hold a run of
// `run` floats: run = 1 for one NCHW image, run = bn for a block of bn
// interleaved images (c, h, w, n) (see "Blocks of images" below). Column p
// of a tap's row then holds the run of output pixel p at p * run.
// ---------------------------------------------------------------------------

// d[0, n) = s[0, n), or d[0, n) += s[0, n). For n == 8 through local copies,
// which tell the compiler the runs do not overlap, so that it uses vectors.
inline void copy_run(float* d, const float* s, int n) {
    if (n == 8) {
        std::memcpy(d, s, 8 * sizeof(float));
    } else {
        for (int i = 0; i < n; ++i) d[i] = s[i];
    }
}
inline void add_run(float* d, const float* s, int n) {
    if (n == 8) {
        float sum[8], addend[8];
        std::memcpy(sum, d, sizeof sum);
        std::memcpy(addend, s, sizeof addend);
        for (int i = 0; i < 8; ++i) sum[i] += addend[i];
        std::memcpy(d, sum, sizeof sum);
    } else {
        for (int i = 0; i < n; ++i) d[i] += s[i];
    }
}

// One kernel tap: row (c, kh, kw) of the column buffer, the offsets of its
// input pixel from the output pixel's strided position, and the output
// rows [oh_lo, oh_hi) and columns [ow_lo, ow_hi) whose input pixel lies
// inside the image (the others read padding).
struct Tap {
    int c, h_off, w_off, oh_lo, oh_hi, ow_lo, ow_hi;
};

// visit(tap, row) for every tap in column-buffer order, row its index.
template <class Visit>
void for_each_tap(const Conv2dGeometry& g, const Visit& visit) {
    std::size_t row = 0;
    for (int c = 0; c < g.in_c; ++c)
        for (int kh = 0; kh < g.kernel_h; ++kh) {
            Tap t{c, kh * g.dil_h - g.pad_h, 0, 0, 0, 0, 0};
            valid_range(t.h_off, g.stride_h, g.in_h, g.out_h, t.oh_lo, t.oh_hi);
            for (int kw = 0; kw < g.kernel_w; ++kw, ++row) {
                t.w_off = kw * g.dil_w - g.pad_w;
                valid_range(t.w_off, g.stride_w, g.in_w, g.out_w, t.ow_lo, t.ow_hi);
                visit(t, row);
            }
        }
}

// Where the tap's input row for output row oh starts in the image side.
inline std::size_t image_row(const Conv2dGeometry& g, const Tap& t, int oh, int run) {
    return (std::size_t(t.c) * g.in_h + std::size_t(oh * g.stride_h + t.h_off)) * g.in_w * run;
}

// col (K rows of P * run, row stride ld) <- im2col of image.
void im2col(const float* image, float* col, std::size_t ld, const Conv2dGeometry& g, int run) {
    const int sw = g.stride_w;
    const std::size_t out_row = std::size_t(g.out_w) * run;
    for_each_tap(g, [&](const Tap& t, std::size_t r) {
        float* row = col + r * ld;
        // output rows that read padding only
        std::fill(row, row + std::size_t(t.oh_lo) * out_row, 0.0f);
        std::fill(row + std::size_t(t.oh_hi) * out_row, row + std::size_t(g.out_h) * out_row, 0.0f);
        for (int oh = t.oh_lo; oh < t.oh_hi; ++oh) {
            float* dst = row + std::size_t(oh) * out_row;
            const float* src = image + image_row(g, t, oh, run);
            std::fill(dst, dst + std::size_t(t.ow_lo) * run, 0.0f);
            if (sw == 1) {  // the valid pixels are one contiguous stretch
                std::memcpy(dst + std::size_t(t.ow_lo) * run, src + std::size_t(t.ow_lo + t.w_off) * run,
                            sizeof(float) * std::size_t(t.ow_hi - t.ow_lo) * run);
            } else {
                for (int ow = t.ow_lo; ow < t.ow_hi; ++ow)
                    copy_run(dst + std::size_t(ow) * run, src + std::size_t(ow * sw + t.w_off) * run, run);
            }
            std::fill(dst + std::size_t(t.ow_hi) * run, dst + out_row, 0.0f);
        }
    });
}

// image (+)= col2im(col) (col: K rows of P * run, row stride ld). If
// accumulate is false, channel c of image is first set to init_bias[c] (or
// 0 if init_bias is null). Channel by channel: a channel's plane stays in
// L1 while its kh*kw column rows are added into it.
//
// col2im consumes col: each row is set back to zero once added, while it is
// still in L1, so that the next block's product can add into the buffer
// (beta = 1). With beta = 0 OpenBLAS would first zero all of C in a pass of
// its own (docs/design.md, "Convolutions").
void col2im(float* col, std::size_t ld, float* image, const Conv2dGeometry& g, int run, bool accumulate, const float* init_bias) {
    const int sw = g.stride_w;
    const std::size_t out_row = std::size_t(g.out_w) * run, plane = g.in_plane() * run;
    int initialised = -1;  // the channel whose plane was set last
    for_each_tap(g, [&](const Tap& t, std::size_t r) {
        if (t.c != initialised) {
            initialised = t.c;
            float* channel = image + std::size_t(t.c) * plane;
            const float b0 = init_bias ? init_bias[t.c] : 0.0f;
            if (!accumulate)
                std::fill(channel, channel + plane, b0);
            else if (init_bias)
                for (std::size_t i = 0; i < plane; ++i) channel[i] += b0;
        }
        float* row = col + r * ld;
        for (int oh = t.oh_lo; oh < t.oh_hi; ++oh) {
            const float* src = row + std::size_t(oh) * out_row;
            float* dst = image + image_row(g, t, oh, run);
            if (sw == 1) {  // the valid pixels are one contiguous stretch
                add_run(dst + std::size_t(t.ow_lo + t.w_off) * run, src + std::size_t(t.ow_lo) * run, (t.ow_hi - t.ow_lo) * run);
            } else if (run == 1) {  // one image: a strided add per pixel, without add_run's test and loop around it
                for (int ow = t.ow_lo; ow < t.ow_hi; ++ow) dst[ow * sw + t.w_off] += src[ow];
            } else {
                for (int ow = t.ow_lo; ow < t.ow_hi; ++ow)
                    add_run(dst + std::size_t(ow * sw + t.w_off) * run, src + std::size_t(ow) * run, run);
            }
        }
        std::fill(row, row + std::size_t(g.out_h) * out_row, 0.0f);
    });
}

// Images per block B (tuned on the DCGAN shapes, docs/design.md): enough images
// that the GEMM's N dimension is wide, while the block's column buffer stays
// L2-sized.
int images_per_block(const Conv2dGeometry& g) {
    // Tuned on the DCGAN shapes (docs/design.md, "Convolutions"):
    //  * Per-image GEMMs (B = 1) avoid the repack of the column-side tensor;
    //    that wins whenever the per-image GEMM is already wide (P large) or the
    //    GEMM is memory bound (small K = in_c*kh*kw, small out_c).
    //  * When P is small (7x7 = 49 columns) the per-image GEMM is skinny and
    //    OpenBLAS runs far below peak; blocking images until N = B*P is about
    //    256-512 columns recovers most of it, as long as the K x B*P column
    //    buffer stays around L2 size (~1 MiB here).
    const std::size_t P = g.out_plane(), K = g.col_rows();
    if (P >= 128) return 1;
    const std::size_t target_cols = 384;
    std::size_t B = (target_cols + P - 1) / P;
    const std::size_t max_col_floats = (std::size_t(2) << 20) / sizeof(float);  // 2 MiB
    while (B > 1 && K * B * P > max_col_floats) --B;
    return int(std::max<std::size_t>(1, std::min<std::size_t>(B, std::size_t(g.batch))));
}

// How a scratch buffer is cut up for one pass. Used both to report the size
// and to run, so the two can never disagree.
struct Layout {
    int B = 1;            // images per block
    int chunks = 1;       // effective number of chunks (<= batch)
    bool phases = false;  // phase-plane im2col
    PhaseDims pd;
    std::size_t col = 0;    // per chunk: K x (B*P) column buffer
    std::size_t pack = 0;   // per chunk: out_c x (B*P) repack buffer (B > 1 only)
    std::size_t image = 0;  // per chunk: B images of the image side, interleaved (B > 1 only)
    std::size_t phase = 0;  // per chunk: phase planes of one image (B == 1 only)
    std::size_t per_chunk = 0;
    std::size_t dw_part = 0;  // per chunk >= 1 (backward_weight, chunks > 1)
    std::size_t total = 0;
};

Layout make_layout(const Conv2dGeometry& g, ConvPass pass, int num_chunks) {
    Layout L;
    L.chunks = std::max(1, std::min(num_chunks, g.batch));
    // A chunk never holds more than ceil(batch / chunks) images: no point in a larger block.
    const int max_imgs = (g.batch + L.chunks - 1) / L.chunks;
    L.B = std::max(1, std::min(images_per_block(g), max_imgs));
    const std::size_t P = g.out_plane(), K = g.col_rows();
    const bool direct = (L.B == 1 && g.im2col_is_identity());
    L.col = direct ? 0 : round_up(K * L.B * P);
    L.pack = L.B > 1 ? round_up(std::size_t(g.out_c) * L.B * P) : 0;
    L.image = L.B > 1 ? round_up(std::size_t(g.in_c) * g.in_plane() * L.B) : 0;
    L.phases = L.B == 1 && !direct && use_phase_path(g);
    if (L.phases) {
        L.pd = phase_dims(g);
        L.phase = round_up(std::size_t(g.in_c) * L.pd.per_channel);
    }
    L.per_chunk = L.col + L.pack + L.image + L.phase;
    if (pass == ConvPass::backward_weight && L.chunks > 1) L.dw_part = round_up(g.weight_size());
    L.total = L.per_chunk * L.chunks + L.dw_part * (L.chunks - 1);
    return L;
}

void check_scratch(const Layout& L, const ConvScratch& s, const char* who) {
    if (L.total > 0 && (s.data == nullptr || s.size < L.total))
        throw std::invalid_argument(std::string(who) + ": scratch too small (" + std::to_string(s.size) + " floats, need " +
                                    std::to_string(L.total) + ")");
}

// A chunk's slice of the scratch buffer.
struct ChunkBufs {
    float* col = nullptr;
    float* pack = nullptr;
    float* image = nullptr;
    float* phase = nullptr;
};
inline ChunkBufs chunk_bufs(const Layout& L, float* base, std::size_t c) {
    ChunkBufs b;
    if (!base) return b;
    float* p = base + c * L.per_chunk;
    b.col = p;
    b.pack = b.col + L.col;
    b.image = b.pack + L.pack;
    b.phase = b.image + L.image;
    return b;
}

// im2col of one image into col (row stride ldc), by the path the layout chose.
inline void im2col_any(const float* xn, float* col, std::size_t ldc, const Conv2dGeometry& g, const Layout& L,
                       const ChunkBufs& cb) {
    if (L.phases) {
        build_phases(xn, cb.phase, g, L.pd);
        im2col_phases(cb.phase, col, ldc, g, L.pd);
    } else {
        im2col(xn, col, ldc, g, 1);
    }
}

// Images [n0, n1) of chunk c.
inline void chunk_range(int batch, int chunks, int c, int& n0, int& n1) {
    n0 = int(std::int64_t(batch) * c / chunks);
    n1 = int(std::int64_t(batch) * (c + 1) / chunks);
}

// ---------------------------------------------------------------------------
// Blocks of images, interleaved. A block of bn > 1 images runs as one
// product whose N = P * bn columns hold pixel p of image n at p * bn + n,
// the images innermost. im2col and col2im then move runs of bn floats (one
// vector for the DCGAN's bn = 8) where a plane-by-plane layout moves the
// 7-float rows of a 7 x 7 output with strided gathers and scatters. The
// image side is interleaved the same way, (c, h, w, n), once per block: a
// pass kh * kw times smaller than the column buffer.
// ---------------------------------------------------------------------------

// The two transposes every repack below is made of, between `rows` rows of
// `len` floats (row r at r * stride) and their interleaving (element i of
// row r at i * rows + r). Four rows by four elements at a time through SSE
// registers where the target has them: one element at a time, the strided
// loads or stores of one image's run were 8 % of the DCGAN step.
//   interleave:   out[i * rows + r] = in[r * stride + i]
//   deinterleave: out[r * stride + i] (= or +=) in[i * rows + r] + add
#if defined(__SSE__)
inline void transpose4(__m128& a, __m128& b, __m128& c, __m128& d) { _MM_TRANSPOSE4_PS(a, b, c, d); }
#endif

void interleave(const float* in, std::size_t stride, int rows, std::size_t len, float* out) {
    const std::size_t R = std::size_t(rows);
    std::size_t rows4 = 0, len4 = 0;  // rows [0, rows4) by elements [0, len4) go 4 x 4
#if defined(__SSE__)
    rows4 = R / 4 * 4;
    len4 = len / 4 * 4;
    for (std::size_t r = 0; r < rows4; r += 4) {
        const float* s = in + r * stride;
        for (std::size_t i = 0; i < len4; i += 4) {
            __m128 a = _mm_loadu_ps(s + i), b = _mm_loadu_ps(s + stride + i), c = _mm_loadu_ps(s + 2 * stride + i),
                   d = _mm_loadu_ps(s + 3 * stride + i);
            transpose4(a, b, c, d);
            float* o = out + i * R + r;
            _mm_storeu_ps(o, a);
            _mm_storeu_ps(o + R, b);
            _mm_storeu_ps(o + 2 * R, c);
            _mm_storeu_ps(o + 3 * R, d);
        }
    }
#endif
    for (std::size_t r = 0; r < R; ++r)
        for (std::size_t i = r < rows4 ? len4 : 0; i < len; ++i) out[i * R + r] = in[r * stride + i];
}

void deinterleave(const float* in, int rows, std::size_t len, float add, bool accumulate, float* out, std::size_t stride) {
    const std::size_t R = std::size_t(rows);
    std::size_t rows4 = 0, len4 = 0;  // rows [0, rows4) by elements [0, len4) go 4 x 4
#if defined(__SSE__)
    rows4 = R / 4 * 4;
    len4 = len / 4 * 4;
    const __m128 added = _mm_set1_ps(add);
    for (std::size_t r = 0; r < rows4; r += 4) {
        float* o = out + r * stride;
        for (std::size_t i = 0; i < len4; i += 4) {
            const float* s = in + i * R + r;
            __m128 a = _mm_loadu_ps(s), b = _mm_loadu_ps(s + R), c = _mm_loadu_ps(s + 2 * R), d = _mm_loadu_ps(s + 3 * R);
            transpose4(a, b, c, d);  // a: row r, elements i .. i + 3
            a = _mm_add_ps(a, added);
            b = _mm_add_ps(b, added);
            c = _mm_add_ps(c, added);
            d = _mm_add_ps(d, added);
            if (accumulate) {
                a = _mm_add_ps(_mm_loadu_ps(o + i), a);
                b = _mm_add_ps(_mm_loadu_ps(o + stride + i), b);
                c = _mm_add_ps(_mm_loadu_ps(o + 2 * stride + i), c);
                d = _mm_add_ps(_mm_loadu_ps(o + 3 * stride + i), d);
            }
            _mm_storeu_ps(o + i, a);
            _mm_storeu_ps(o + stride + i, b);
            _mm_storeu_ps(o + 2 * stride + i, c);
            _mm_storeu_ps(o + 3 * stride + i, d);
        }
    }
#endif
    for (std::size_t r = 0; r < R; ++r)
        for (std::size_t i = r < rows4 ? len4 : 0; i < len; ++i) {
            const float v = in[i * R + r] + add;
            float& dst = out[r * stride + i];
            dst = accumulate ? dst + v : v;
        }
}

// xt (in_c, in_h, in_w, bn) <- images [nb, nb + bn) of the NCHW image side x.
void interleave_images(const float* x, int nb, int bn, const Conv2dGeometry& g, float* xt) {
    const std::size_t size = std::size_t(g.in_c) * g.in_plane();
    interleave(x + std::size_t(nb) * size, size, bn, size, xt);
}

// Images [nb, nb + bn) of dx (=/+=) xt (in_c, in_h, in_w, bn) + bias[c].
void deinterleave_images(const float* xt, int nb, int bn, const Conv2dGeometry& g, const float* bias, bool accumulate,
                         float* dx) {
    const std::size_t plane = g.in_plane(), size = std::size_t(g.in_c) * plane;
    for (int c = 0; c < g.in_c; ++c) {
        deinterleave(xt + std::size_t(c) * plane * bn, bn, plane, bias ? bias[c] : 0.0f, accumulate,
                     dx + std::size_t(nb) * size + c * plane, size);
    }
}

// Images [nb, nb + bn) of the NCHW column-side tensor t -> the GEMM layout
// (out_c, P * bn).
void pack_column_side(const float* t, int nb, int bn, const Conv2dGeometry& g, float* pack) {
    const std::size_t P = g.out_plane(), size = std::size_t(g.out_c) * P;
    for (int o = 0; o < g.out_c; ++o) interleave(t + std::size_t(nb) * size + o * P, size, bn, P, pack + o * P * bn);
}

// The GEMM layout (out_c, P * bn) -> images [nb, nb + bn) of t, fusing the
// bias and the accumulation. Leaves pack zero, each row cleared while it is
// still in cache, so that the next block's product can add into it.
void unpack_column_side(float* pack, int nb, int bn, const Conv2dGeometry& g, const float* bias, bool accumulate, float* t) {
    const std::size_t P = g.out_plane(), size = std::size_t(g.out_c) * P;
    for (int o = 0; o < g.out_c; ++o) {
        float* row = pack + o * P * bn;
        deinterleave(row, bn, P, bias ? bias[o] : 0.0f, accumulate, t + std::size_t(nb) * size + o * P, size);
        std::fill(row, row + P * bn, 0.0f);
    }
}

// ---------------------------------------------------------------------------
// Per-chunk workers. Each processes images [n0, n1) in blocks of L.B using
// its own scratch slice.
// ---------------------------------------------------------------------------

// y[0, n) = relu(y) (slope 0) or leaky_relu(y, slope), in place.
void rectify(float* y, std::size_t n, float slope) {
    if (slope == 0.0f) {
        simd::relu(y, y, n);
    } else {
        simd::leaky_relu(y, y, n, slope);
    }
}

// y (+)= W * im2col(x) (+ bias on the column side), each block of images
// then rectified if asked (not with accumulate).
void forward_chunk(const float* x, const float* w, const float* bias, float* y, const Conv2dGeometry& g, const Layout& L,
                   const ChunkBufs& cb, int n0, int n1, bool accumulate, std::optional<float> rectifier) {
    const std::size_t P = g.out_plane(), K = g.col_rows();
    const std::size_t xs = std::size_t(g.in_c) * g.in_plane(), ys = std::size_t(g.out_c) * P;
    // The products add into what is there (beta = 1) rather than have the
    // BLAS zero their output in a pass of its own: y_n starts as the bias,
    // the pack as zeros (unpack_column_side leaves it so).
    if (L.B > 1) std::fill(cb.pack, cb.pack + std::size_t(g.out_c) * P * std::min(L.B, n1 - n0), 0.0f);
    for (int nb = n0; nb < n1; nb += L.B) {
        const int bn = std::min(L.B, n1 - nb);
        if (L.B == 1) {
            // No repack: GEMM straight into y_n.
            const float* xn = x + nb * xs;
            float* yn = y + nb * ys;
            const float* cp = xn;
            if (!g.im2col_is_identity()) {
                im2col_any(xn, cb.col, P, g, L, cb);
                cp = cb.col;
            }
            if (bias)
                for (int o = 0; o < g.out_c; ++o) {
                    float* r = yn + o * P;
                    const float bo = bias[o];
                    for (std::size_t p = 0; p < P; ++p) r[p] = (accumulate ? r[p] : 0.0f) + bo;
                }
            gemm(false, false, g.out_c, P, K, w, K, cp, P, accumulate || bias ? 1.0f : 0.0f, yn, P);
            if (rectifier) rectify(yn, ys, *rectifier);
        } else {
            const std::size_t ld = std::size_t(bn) * P;
            interleave_images(x, nb, bn, g, cb.image);
            im2col(cb.image, cb.col, ld, g, bn);
            gemm(false, false, g.out_c, ld, K, w, K, cb.col, ld, 1.0f, cb.pack, ld);
            unpack_column_side(cb.pack, nb, bn, g, bias, accumulate, y);
            if (rectifier) rectify(y + nb * ys, bn * ys, *rectifier);
        }
    }
}

// dx (+)= col2im(W^T * dy) (+ bias on the image side, used by conv_transpose2d)
void backward_data_chunk(const float* dy, const float* w, const float* bias, float* dx, const Conv2dGeometry& g, const Layout& L,
                         const ChunkBufs& cb, int n0, int n1, bool accumulate) {
    const std::size_t P = g.out_plane(), K = g.col_rows();
    const std::size_t xs = std::size_t(g.in_c) * g.in_plane(), ys = std::size_t(g.out_c) * P;
    // The products add into the column buffer, which col2im leaves zero.
    if (L.col > 0) std::fill(cb.col, cb.col + K * std::size_t(std::min(L.B, n1 - n0)) * P, 0.0f);
    for (int nb = n0; nb < n1; nb += L.B) {
        const int bn = std::min(L.B, n1 - nb);
        if (L.B == 1) {
            const float* dyn = dy + nb * ys;
            float* dxn = dx + nb * xs;
            if (g.im2col_is_identity()) {
                // col2im is the identity too: write dx_n directly.
                gemm(true, false, K, P, g.out_c, w, K, dyn, P, accumulate ? 1.0f : 0.0f, dxn, P);
                if (bias)
                    for (int c = 0; c < g.in_c; ++c)
                        for (std::size_t p = 0; p < P; ++p) dxn[c * P + p] += bias[c];
            } else {
                gemm(true, false, K, P, g.out_c, w, K, dyn, P, 1.0f, cb.col, P);
                col2im(cb.col, P, dxn, g, 1, accumulate, bias);
            }
        } else {
            const std::size_t ld = std::size_t(bn) * P;
            pack_column_side(dy, nb, bn, g, cb.pack);
            gemm(true, false, K, ld, g.out_c, w, K, cb.pack, ld, 1.0f, cb.col, ld);
            col2im(cb.col, ld, cb.image, g, bn, false, nullptr);
            deinterleave_images(cb.image, nb, bn, g, bias, accumulate, dx);
        }
    }
}

// dw (+)= sum_n dy_n * im2col(x_n)^T.
void backward_weight_chunk(const float* dy, const float* x, float* dw, const Conv2dGeometry& g, const Layout& L,
                           const ChunkBufs& cb, int n0, int n1, bool accumulate) {
    const std::size_t P = g.out_plane(), K = g.col_rows();
    const std::size_t xs = std::size_t(g.in_c) * g.in_plane(), ys = std::size_t(g.out_c) * P;
    float beta = accumulate ? 1.0f : 0.0f;
    for (int nb = n0; nb < n1; nb += L.B, beta = 1.0f) {
        const int bn = std::min(L.B, n1 - nb);
        if (L.B == 1) {
            const float* xn = x + nb * xs;
            const float* cp = xn;
            if (!g.im2col_is_identity()) {
                im2col_any(xn, cb.col, P, g, L, cb);
                cp = cb.col;
            }
            gemm(false, true, g.out_c, K, P, dy + nb * ys, P, cp, P, beta, dw, K);
        } else {
            const std::size_t ld = std::size_t(bn) * P;
            pack_column_side(dy, nb, bn, g, cb.pack);
            interleave_images(x, nb, bn, g, cb.image);
            im2col(cb.image, cb.col, ld, g, bn);
            gemm(false, true, g.out_c, K, ld, cb.pack, ld, cb.col, ld, beta, dw, K);
        }
    }
}

// ---------------------------------------------------------------------------
// Drivers
// ---------------------------------------------------------------------------
// Validates, lays the batch out in chunks and runs
// chunk(layout, c, buffers, first image, end image) for each chunk over
// xgrad's threads. Returns the layout.
template <class Chunk>
Layout run_chunks(const Conv2dGeometry& g, const ConvScratch& s, ConvPass pass_for_layout, int num_chunks, const char* who,
                  const Chunk& chunk) {
    g.validate();
    const Layout L = make_layout(g, pass_for_layout, num_chunks);
    check_scratch(L, s, who);
    parallel_for(std::size_t(L.chunks), 1, [&](std::size_t first, std::size_t end) {
        for (std::size_t c = first; c < end; ++c) {
            int n0, n1;
            chunk_range(g.batch, L.chunks, int(c), n0, n1);
            chunk(L, c, chunk_bufs(L, s.data, c), n0, n1);
        }
    });
    return L;
}

void run_forward(const float* x, const float* w, const float* bias, float* y, const Conv2dGeometry& g, const ConvScratch& s,
                 ConvPass pass_for_layout, int num_chunks, bool accumulate, std::optional<float> rectifier, const char* who) {
    run_chunks(g, s, pass_for_layout, num_chunks, who, [&](const Layout& L, std::size_t, const ChunkBufs& bufs, int n0, int n1) {
        forward_chunk(x, w, bias, y, g, L, bufs, n0, n1, accumulate, rectifier);
    });
}

void run_backward_data(const float* dy, const float* w, const float* bias, float* dx, const Conv2dGeometry& g,
                       const ConvScratch& s, ConvPass pass_for_layout, int num_chunks, bool accumulate, const char* who) {
    run_chunks(g, s, pass_for_layout, num_chunks, who, [&](const Layout& L, std::size_t, const ChunkBufs& bufs, int n0, int n1) {
        backward_data_chunk(dy, w, bias, dx, g, L, bufs, n0, n1, accumulate);
    });
}

// Chunk c's (c >= 1) private dW partial sum, after the chunks' buffers.
float* partial_gradient(const Layout& L, const ConvScratch& s, std::size_t c) {
    return s.data + L.per_chunk * L.chunks + (c - 1) * L.dw_part;
}

void run_backward_weight(const float* dy, const float* x, float* dw, const Conv2dGeometry& g, const ConvScratch& s,
                         int num_chunks, bool accumulate, const char* who) {
    const Layout L = run_chunks(g, s, ConvPass::backward_weight, num_chunks, who,
                                [&](const Layout& L, std::size_t c, const ChunkBufs& bufs, int n0, int n1) {
                                    // Chunk 0 writes the real destination (honouring `accumulate`); the
                                    // others write private partials, summed below.
                                    const bool first = c == 0;
                                    backward_weight_chunk(dy, x, first ? dw : partial_gradient(L, s, c), g, L, bufs, n0, n1,
                                                          first && accumulate);
                                });
    if (L.chunks == 1) return;
    // Fixed-order reduction (deterministic), itself split over the weight elements.
    parallel_for(g.weight_size(), 4096, [&](std::size_t first, std::size_t end) {
        for (int c = 1; c < L.chunks; ++c) {
            const float* part = partial_gradient(L, s, std::size_t(c));
            for (std::size_t i = first; i < end; ++i) dw[i] += part[i];
        }
    });
}

}  // namespace

// ---------------------------------------------------------------------------
// Geometry
// ---------------------------------------------------------------------------
Conv2dGeometry Conv2dGeometry::conv2d(int N, int C_in, int H, int W, int C_out, int kH, int kW, int stride_h, int stride_w,
                                      int pad_h, int pad_w, int dil_h, int dil_w) {
    Conv2dGeometry g;
    g.batch = N;
    g.in_c = C_in;
    g.in_h = H;
    g.in_w = W;
    g.out_c = C_out;
    g.kernel_h = kH;
    g.kernel_w = kW;
    g.stride_h = stride_h;
    g.stride_w = stride_w;
    g.pad_h = pad_h;
    g.pad_w = pad_w;
    g.dil_h = dil_h;
    g.dil_w = dil_w;
    g.out_h = conv_out_size(H, kH, stride_h, pad_h, dil_h);
    g.out_w = conv_out_size(W, kW, stride_w, pad_w, dil_w);
    g.validate();
    return g;
}

Conv2dGeometry Conv2dGeometry::conv_transpose2d(int N, int C_in, int H, int W, int C_out, int kH, int kW, int stride_h,
                                                int stride_w, int pad_h, int pad_w, int out_pad_h, int out_pad_w, int dil_h,
                                                int dil_w) {
    // PyTorch's rule: output_padding must be smaller than stride or dilation.
    if (out_pad_h < 0 || out_pad_w < 0 || (out_pad_h >= stride_h && out_pad_h >= dil_h) ||
        (out_pad_w >= stride_w && out_pad_w >= dil_w))
        throw std::invalid_argument("conv_transpose2d: output_padding must be smaller than stride or dilation");
    Conv2dGeometry g;
    g.batch = N;
    g.out_c = C_in;  // transposed input = conv2d column side
    g.out_h = H;
    g.out_w = W;
    g.in_c = C_out;  // transposed output = conv2d image side
    g.in_h = conv_transpose_out_size(H, kH, stride_h, pad_h, dil_h, out_pad_h);
    g.in_w = conv_transpose_out_size(W, kW, stride_w, pad_w, dil_w, out_pad_w);
    g.kernel_h = kH;
    g.kernel_w = kW;
    g.stride_h = stride_h;
    g.stride_w = stride_w;
    g.pad_h = pad_h;
    g.pad_w = pad_w;
    g.dil_h = dil_h;
    g.dil_w = dil_w;
    g.validate();
    return g;
}

void Conv2dGeometry::validate() const {
    auto fail = [](const std::string& m) { throw std::invalid_argument("Conv2dGeometry: " + m); };
    if (batch < 1 || in_c < 1 || out_c < 1) fail("batch and channels must be >= 1");
    if (kernel_h < 1 || kernel_w < 1) fail("kernel must be >= 1");
    if (stride_h < 1 || stride_w < 1 || dil_h < 1 || dil_w < 1) fail("stride and dilation must be >= 1");
    if (pad_h < 0 || pad_w < 0) fail("padding must be >= 0");
    if (in_h < 1 || in_w < 1 || out_h < 1 || out_w < 1) fail("empty spatial size (kernel larger than padded input?)");
    if (out_h > conv_out_size(in_h, kernel_h, stride_h, pad_h, dil_h) ||
        out_w > conv_out_size(in_w, kernel_w, stride_w, pad_w, dil_w))
        fail("output larger than the conv2d formula allows");
    // every GEMM dimension / leading dimension must fit a 32-bit blasint
    const double big = double(col_rows()) * double(batch) * double(out_plane());
    if (big > double(INT_MAX) || double(out_c) * double(batch) * double(out_plane()) > double(INT_MAX))
        fail("too large for 32-bit BLAS indices");
}

std::size_t conv2d_scratch_floats(const Conv2dGeometry& g, ConvPass pass, int num_chunks) {
    return make_layout(g, pass, num_chunks).total;
}

std::size_t conv_transpose2d_scratch_floats(const Conv2dGeometry& g, ConvPass pass, int num_chunks) {
    // The transposed passes run the conv2d adjoint kernels; layouts are per
    // kernel, so map each pass to the kernel it runs.
    ConvPass k = pass == ConvPass::forward         ? ConvPass::backward_data
                 : pass == ConvPass::backward_data ? ConvPass::forward
                                                   : ConvPass::backward_weight;
    return make_layout(g, k, num_chunks).total;
}

// ---------------------------------------------------------------------------
// Public entry points
// ---------------------------------------------------------------------------
void conv2d_forward(const float* x, const float* w, const float* b, float* y, const Conv2dGeometry& g, const ConvScratch& s,
                    int num_chunks, std::optional<float> rectifier_slope) {
    run_forward(x, w, b, y, g, s, ConvPass::forward, num_chunks, false, rectifier_slope, "conv2d_forward");
}
void conv2d_backward_data(const float* dy, const float* w, float* dx, const Conv2dGeometry& g, const ConvScratch& s,
                          int num_chunks, bool accumulate) {
    run_backward_data(dy, w, nullptr, dx, g, s, ConvPass::backward_data, num_chunks, accumulate, "conv2d_backward_data");
}
void conv2d_backward_weight(const float* dy, const float* x, float* dw, const Conv2dGeometry& g, const ConvScratch& s,
                            int num_chunks, bool accumulate) {
    run_backward_weight(dy, x, dw, g, s, num_chunks, accumulate, "conv2d_backward_weight");
}

void conv_transpose2d_forward(const float* x, const float* w, const float* b, float* y, const Conv2dGeometry& g,
                              const ConvScratch& s, int num_chunks) {
    run_backward_data(x, w, b, y, g, s, ConvPass::backward_data, num_chunks, false, "conv_transpose2d_forward");
}
void conv_transpose2d_backward_data(const float* dy, const float* w, float* dx, const Conv2dGeometry& g, const ConvScratch& s,
                                    int num_chunks, bool accumulate) {
    run_forward(dy, w, nullptr, dx, g, s, ConvPass::forward, num_chunks, accumulate, std::nullopt,
                "conv_transpose2d_backward_data");
}
void conv_transpose2d_backward_weight(const float* dy, const float* x, float* dw, const Conv2dGeometry& g, const ConvScratch& s,
                                      int num_chunks, bool accumulate) {
    // conv2d backward-weight with column side = x (transposed input) and image
    // side = dy (transposed output).
    run_backward_weight(x, dy, dw, g, s, num_chunks, accumulate, "conv_transpose2d_backward_weight");
}

}  // namespace conv
}  // namespace xgrad
