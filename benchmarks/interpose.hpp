// What the benchmarks observe from inside the process: heap allocations
// (tests/alloc_counter.hpp, the interposer the tests use too) and BLAS calls:
// a program's own cblas_sgemm/sgemv take precedence over OpenBLAS's and
// forward to them (dlsym RTLD_NEXT), so every library in the process is
// counted. (Own declarations: cblas.h clashes with xtensor-blas; blasint is
// int and the CBLAS enums are int-sized.) Include this header in exactly one
// translation unit of a benchmark executable.
#pragma once

#include <atomic>
#include <cstddef>
#include <mutex>
#include <vector>

#include <dlfcn.h>

#include "alloc_counter.hpp"
#include "stats.hpp"

namespace bench {

// One sgemm call as BLAS saw it (row-major, the CBLAS enum values).
struct GemmCall {
    int ta, tb, m, n, k, lda, ldb, ldc;
    float beta;
};
inline std::atomic<long> sgemm_calls{0}, sgemv_calls{0};
inline std::atomic<bool> recording{false};
inline std::mutex recorded_mutex;
inline std::vector<GemmCall> recorded;  // reserve() before recording: no allocation inside a step

template <class Fn>
Fn next_definition(const char* name) {
    return reinterpret_cast<Fn>(dlsym(RTLD_NEXT, name));
}

}  // namespace bench

extern "C" {
void cblas_sgemm(int order, int ta, int tb, int m, int n, int k, float alpha, const float* a, int lda, const float* b, int ldb,
                 float beta, float* c, int ldc) {
    using Fn = void (*)(int, int, int, int, int, int, float, const float*, int, const float*, int, float, float*, int);
    static const Fn real = bench::next_definition<Fn>("cblas_sgemm");
    bench::sgemm_calls.fetch_add(1, std::memory_order_relaxed);
    if (bench::recording.load(std::memory_order_relaxed)) {
        const std::lock_guard<std::mutex> lock(bench::recorded_mutex);
        bench::recorded.push_back({ta, tb, m, n, k, lda, ldb, ldc, beta});
    }
    real(order, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
void cblas_sgemv(int order, int trans, int m, int n, float alpha, const float* a, int lda, const float* x, int incx, float beta,
                 float* y, int incy) {
    using Fn = void (*)(int, int, int, int, float, const float*, int, const float*, int, float, float*, int);
    static const Fn real = bench::next_definition<Fn>("cblas_sgemv");
    bench::sgemv_calls.fetch_add(1, std::memory_order_relaxed);
    real(order, trans, m, n, alpha, a, lda, x, incx, beta, y, incy);
}
}
