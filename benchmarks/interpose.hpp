// What the benchmarks observe from inside the process: heap allocations and
// BLAS calls. glibc lets a program define the allocator entry points and
// forward to its __libc_* internals, and a program's own cblas_sgemm/sgemv
// take precedence over OpenBLAS's and forward to them (dlsym RTLD_NEXT), so
// every library in the process is counted. Include this header in exactly
// one translation unit of a benchmark executable.
#pragma once

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <new>
#include <string>
#include <vector>

#include <dlfcn.h>

extern "C" {
void* __libc_malloc(std::size_t);
void* __libc_calloc(std::size_t, std::size_t);
void* __libc_realloc(void*, std::size_t);
void* __libc_memalign(std::size_t, std::size_t);
void __libc_free(void*);
}

namespace bench {

inline std::atomic<bool> counting{false};
inline std::atomic<long> allocations{0};
inline void count_allocation() {
    if (counting.load(std::memory_order_relaxed)) allocations.fetch_add(1, std::memory_order_relaxed);
}

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

inline double percentile(std::vector<double> v, double q) {
    const std::size_t i = static_cast<std::size_t>(q * double(v.size() - 1) + 0.5);
    std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(i), v.end());
    return v[i];
}

inline std::string load_average() {
    std::ifstream in("/proc/loadavg");
    std::string one;
    in >> one;
    return one.empty() ? "unknown" : one;
}

}  // namespace bench

extern "C" {
void* malloc(std::size_t n) {
    bench::count_allocation();
    return __libc_malloc(n);
}
void* calloc(std::size_t count, std::size_t n) {
    bench::count_allocation();
    return __libc_calloc(count, n);
}
void* realloc(void* p, std::size_t n) {
    bench::count_allocation();
    return __libc_realloc(p, n);
}
void* memalign(std::size_t alignment, std::size_t n) {
    bench::count_allocation();
    return __libc_memalign(alignment, n);
}
void* aligned_alloc(std::size_t alignment, std::size_t n) {
    bench::count_allocation();
    return __libc_memalign(alignment, n);
}
int posix_memalign(void** out, std::size_t alignment, std::size_t n) {
    if (alignment < sizeof(void*) || (alignment & (alignment - 1)) != 0) return EINVAL;
    bench::count_allocation();
    void* p = __libc_memalign(alignment, n);
    if (!p) return ENOMEM;
    *out = p;
    return 0;
}
void free(void* p) { __libc_free(p); }

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

// libstdc++'s operator new already calls malloc; replacing it makes the
// counting independent of how the C++ runtime is built.
void* operator new(std::size_t n) {
    if (void* p = std::malloc(n)) return p;
    throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return operator new(n); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
