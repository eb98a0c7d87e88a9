#include <xgrad/core/kernels.hpp>

#include <algorithm>
#include <cstring>
#include <string>

#include <cblas.h>

namespace xgrad {

ConstMatrix as_matrix(const Tensor& t) {
    const std::size_t cols = t.dimension() == 0 ? 1 : t.shape().back();
    return {t.data(), cols == 0 ? 0 : t.size() / cols, cols};
}

Matrix as_matrix(Tensor& t) {
    const ConstMatrix m = as_matrix(static_cast<const Tensor&>(t));
    return {t.data(), m.rows, m.cols};
}

namespace {

std::string matrix_string(ConstMatrix m, bool transposed) {
    return "(" + std::to_string(m.rows) + ", " + std::to_string(m.cols) + ")" + (transposed ? "^T" : "");
}

int blas(std::size_t v) { return static_cast<int>(v); }

}  // namespace

void gemm(const char* op, ConstMatrix a, bool transpose_a, ConstMatrix b, bool transpose_b, Matrix c, float beta) {
    const std::size_t m = transpose_a ? a.cols : a.rows, k = transpose_a ? a.rows : a.cols;
    const std::size_t kb = transpose_b ? b.cols : b.rows, n = transpose_b ? b.rows : b.cols;
    if (k != kb || c.rows != m || c.cols != n) {
        throw ShapeError(std::string("xgrad::") + op + ": cannot multiply " + matrix_string(a, transpose_a) + " by " +
                         matrix_string(b, transpose_b) + " into " + matrix_string(c, false));
    }
    gemm(transpose_a, transpose_b, m, n, k, a.data, a.cols, b.data, b.cols, beta, c.data, c.cols);
}

void gemm(bool transpose_a, bool transpose_b, std::size_t m, std::size_t n, std::size_t k, const float* a, std::size_t lda,
          const float* b, std::size_t ldb, float beta, float* c, std::size_t ldc) {
    if (m == 0 || n == 0) return;
    if (k == 0) {  // BLAS leaves c untouched when there is nothing to sum
        for (std::size_t i = 0; i < m; ++i) {
            float* row = c + i * ldc;
            if (beta == 0.f) {
                std::fill(row, row + n, 0.f);  // c may hold leftovers (even NaN) from the pool
            } else {
                for (std::size_t j = 0; j < n; ++j) row[j] *= beta;
            }
        }
        return;
    }
    if (m == 1 || n == 1) {
        // A matrix-vector product goes to gemv, the BLAS kernel for that
        // shape: OpenBLAS's small-matrix sgemm kernels (0.3.21, SkylakeX)
        // malloc a scratch buffer on every such call. Either c = op(a) . b
        // with b a vector, or c^T = op(b)^T . a^T with a a vector; a
        // vector's step is its matrix's row stride when it is a column.
        const bool column = n == 1;
        const float* matrix = column ? a : b;
        const std::size_t ld = column ? lda : ldb;
        const bool transpose = column ? transpose_a : !transpose_b;
        const std::size_t rows = transpose ? k : (column ? m : n), cols = transpose ? (column ? m : n) : k;
        const std::size_t x_step = column ? (transpose_b ? 1 : ldb) : (transpose_a ? lda : 1);
        const std::size_t y_step = column ? ldc : 1;
        cblas_sgemv(CblasRowMajor, transpose ? CblasTrans : CblasNoTrans, blas(rows), blas(cols), 1.f, matrix, blas(ld),
                    column ? b : a, blas(x_step), beta, c, blas(y_step));
        return;
    }
    // Large products run as blocks of c's rows on xgrad's threads (see
    // parallel.hpp); a block is at least 16 rows and 64K multiply-adds, so
    // that handing it to another thread costs little against its work.
    // Row block [begin, end) of op(a) starts at row `begin` of a, or at
    // column `begin` when a is transposed.
    const std::size_t grain = std::max<std::size_t>(16, (std::size_t(1) << 16) / (n * k));
    if (k == 1 && beta == 0.f) {
        // An outer product (the input gradient of a linear layer with one
        // output): OpenBLAS zeroes c, packs both vectors and runs its kernel,
        // 4.6x the time of writing each row once (64 x 6272, AMD EPYC Zen 3).
        // Each element is the one product, rounded once, as in the BLAS.
        const std::size_t a_step = transpose_a ? 1 : lda, b_step = transpose_b ? ldb : 1;
        parallel_for(m, grain, [&](std::size_t begin, std::size_t end) {
            for (std::size_t i = begin; i < end; ++i) {
                const float ai = a[i * a_step];
                float* row = c + i * ldc;
                for (std::size_t j = 0; j < n; ++j) row[j] = ai * b[j * b_step];
            }
        });
        return;
    }
    parallel_for(m, grain, [&](std::size_t begin, std::size_t end) {
        cblas_sgemm(CblasRowMajor, transpose_a ? CblasTrans : CblasNoTrans, transpose_b ? CblasTrans : CblasNoTrans,
                    blas(end - begin), blas(n), blas(k), 1.f, a + (transpose_a ? begin : begin * lda), blas(lda), b, blas(ldb),
                    beta, c + begin * ldc, blas(ldc));
    });
}

AxisLanes lanes_around(const Shape& shape, std::size_t axis) {
    AxisLanes l;
    for (std::size_t d = 0; d < axis; ++d) l.outer *= shape[d];
    l.n = shape[axis];
    for (std::size_t d = axis + 1; d < shape.size(); ++d) l.inner *= shape[d];
    return l;
}

// ---- broadcasting kernels ------------------------------------------------------

namespace {

// The pairing of a full shape with a broadcast one, with runs of dimensions
// of the same kind merged: (64, 128, 7, 7) against (128, 1, 1) becomes
// [64: broadcast, 128: kept, 49: broadcast]. Dimensions of size 1 in the
// full shape drop out. Both kernels then walk at most `count` nested loops,
// the innermost contiguous.
struct Pattern {
    static constexpr std::size_t kMax = 16;
    std::size_t size[kMax];
    bool kept[kMax];  // the small shape has this extent too (else it has 1)
    std::size_t count = 0;
};

// `summing`: for the error message, whether full is summed down to small
// (sum_to) or small broadcast up to full (expand_to).
Pattern pattern_of(const char* op, bool summing, const Shape& full, const Shape& small) {
    const auto fail = [&] {
        throw ShapeError(std::string("xgrad::") + op + ": cannot " +
                         (summing ? "sum a tensor of shape " + shape_string(full) + " down to " + shape_string(small)
                                  : "broadcast shape " + shape_string(small) + " to " + shape_string(full)) +
                         " (aligned at the last dimension, each size must match or be 1)");
    };
    if (small.size() > full.size()) fail();
    Pattern p;
    const std::size_t offset = full.size() - small.size();
    for (std::size_t i = 0; i < full.size(); ++i) {
        const std::size_t f = full[i], s = i < offset ? 1 : small[i - offset];
        if (s != f && s != 1) fail();
        if (f == 1) continue;
        const bool kept = s == f;
        if (p.count > 0 && p.kept[p.count - 1] == kept) {
            p.size[p.count - 1] *= f;
        } else {
            if (p.count == Pattern::kMax) throw ShapeError(std::string("xgrad::") + op + ": too many dimensions");
            p.size[p.count] = f;
            p.kept[p.count] = kept;
            ++p.count;
        }
    }
    return p;
}

// scale times the sum of x[0, n), as every summing path of sum_to adds it,
// so that they give the same bits. Four running sums overlap their additions
// instead of each waiting for the previous one (3x faster), in double so
// that long sums keep their digits.
float scaled_total(const float* x, std::size_t n, float scale) {
    double s[4] = {0.0, 0.0, 0.0, 0.0};
    std::size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        for (std::size_t j = 0; j < 4; ++j) s[j] += x[i + j];
    }
    for (; i < n; ++i) s[0] += x[i];
    return static_cast<float>(double(scale) * ((s[0] + s[1]) + (s[2] + s[3])));
}

// Calls inner(full_offset, small_offset) for every combination of the
// outer (all but the last) merged dimensions; the offsets are where the
// innermost run starts in each tensor.
template <class Inner>
void for_each_run(const Pattern& p, const Inner& inner) {
    if (p.count == 0) {
        inner(std::size_t{0}, std::size_t{0});
        return;
    }
    const std::size_t outer = p.count - 1;
    std::size_t full_stride[Pattern::kMax], small_stride[Pattern::kMax];
    std::size_t fs = p.size[outer], ss = p.kept[outer] ? p.size[outer] : 1;
    for (std::size_t d = outer; d-- > 0;) {
        full_stride[d] = fs;
        small_stride[d] = p.kept[d] ? ss : 0;
        fs *= p.size[d];
        if (p.kept[d]) ss *= p.size[d];
    }
    std::size_t counter[Pattern::kMax] = {};
    std::size_t full_offset = 0, small_offset = 0;
    for (;;) {
        inner(full_offset, small_offset);
        std::size_t d = outer;
        for (; d-- > 0;) {
            full_offset += full_stride[d];
            small_offset += small_stride[d];
            if (++counter[d] < p.size[d]) break;
            full_offset -= full_stride[d] * p.size[d];
            small_offset -= small_stride[d] * p.size[d];
            counter[d] = 0;
        }
        if (d == std::size_t(-1)) return;
    }
}

// (outer: summed, n: kept, inner: summed), such as a bias's gradient from
// an (N, C, H, W) one: split over the kept axis, so that each of dst's n
// elements is summed by one thread, in the order of the serial loop (the
// same bits on any number of threads). False for any other pattern.
bool sum_runs_per_element(const Pattern& p, const float* src, float* dst, bool accumulate, float scale) {
    const bool runs_then_kept = p.count >= 2 && !p.kept[p.count - 1] && p.kept[p.count - 2];
    if (!runs_then_kept || p.count > 3) return false;
    const std::size_t outer = p.count == 3 ? p.size[0] : 1, n = p.size[p.count - 2], inner = p.size[p.count - 1];
    parallel_for(n, items_per_block(outer * inner), [&](std::size_t begin, std::size_t end) {
        for (std::size_t j = begin; j < end; ++j) {
            float sum = accumulate ? dst[j] : 0.f;
            for (std::size_t o = 0; o < outer; ++o) {
                sum += scaled_total(src + (o * n + j) * inner, inner, scale);
            }
            dst[j] = sum;
        }
    });
    return true;
}

}  // namespace

void sum_to(const char* op, const float* src, const Shape& src_shape, float* dst, const Shape& dst_shape, bool accumulate,
            float scale) {
    if (dst_shape.size() <= src_shape.size() && numel(dst_shape) == 1) {  // a total: the common case of a loss
        const float total = scaled_total(src, numel(src_shape), scale);
        *dst = accumulate ? *dst + total : total;
        return;
    }
    const Pattern p = pattern_of(op, true, src_shape, dst_shape);
    const std::size_t src_size = numel(src_shape), dst_size = numel(dst_shape);
    if (p.count <= 1 && src_size == dst_size) {  // nothing to sum: one pass
        if (accumulate) {
            for (std::size_t j = 0; j < dst_size; ++j) dst[j] += scale * src[j];
        } else {
            for (std::size_t j = 0; j < dst_size; ++j) dst[j] = scale * src[j];
        }
        return;
    }
    if (src_size == 0) {
        if (!accumulate) std::fill(dst, dst + dst_size, 0.f);
        return;
    }
    if (sum_runs_per_element(p, src, dst, accumulate, scale)) return;
    const std::size_t last = p.size[p.count - 1];
    const bool inner_kept = p.kept[p.count - 1];
    if (!accumulate) std::fill(dst, dst + dst_size, 0.f);
    for_each_run(p, [&](std::size_t full, std::size_t small) {
        if (inner_kept) {
            for (std::size_t j = 0; j < last; ++j) dst[small + j] += scale * src[full + j];
        } else {
            dst[small] += scaled_total(src + full, last, scale);
        }
    });
}

void expand_to(const char* op, const float* src, const Shape& src_shape, float* dst, const Shape& dst_shape, bool accumulate,
               float scale) {
    const std::size_t n = numel(dst_shape);
    if (src_shape.size() <= dst_shape.size() && numel(src_shape) == 1) {  // a constant: the gradient of a total
        const float v = scale * *src;
        if (accumulate) {
            for (std::size_t j = 0; j < n; ++j) dst[j] += v;
        } else {
            std::fill(dst, dst + n, v);
        }
        return;
    }
    const Pattern p = pattern_of(op, false, dst_shape, src_shape);
    if (numel(dst_shape) == 0) return;
    const std::size_t last = p.count == 0 ? 1 : p.size[p.count - 1];
    const bool inner_kept = p.count == 0 || p.kept[p.count - 1];
    for_each_run(p, [&](std::size_t full, std::size_t small) {
        float* o = dst + full;
        if (inner_kept) {
            const float* i = src + small;
            if (accumulate) {
                for (std::size_t j = 0; j < last; ++j) o[j] += scale * i[j];
            } else {
                for (std::size_t j = 0; j < last; ++j) o[j] = scale * i[j];
            }
        } else {
            const float v = scale * src[small];
            if (accumulate) {
                for (std::size_t j = 0; j < last; ++j) o[j] += v;
            } else {
                std::fill(o, o + last, v);
            }
        }
    });
}

}  // namespace xgrad
