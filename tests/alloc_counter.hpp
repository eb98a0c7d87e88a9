// Counts heap allocations, for "allocates nothing in steady state" checks.
//
// It defines the C allocator's entry points (glibc lets a program do that and
// forward to its __libc_* internals, so every library in the process, MPI
// and xtensor's aligned allocator included, goes through them) and operator
// new. Include it in exactly one translation unit of an executable (a second
// one is a multiple-definition link error). Under AddressSanitizer or
// ThreadSanitizer, whose runtimes own the allocator, it defines nothing and
// during() returns -1 (not counted).
// The benchmarks count with it too (benchmarks/interpose.hpp).
#pragma once

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <new>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define XGRAD_ALLOC_COUNTER 0
#else
#define XGRAD_ALLOC_COUNTER 1
#endif

namespace alloc_counter {

inline std::atomic<bool> counting{false};
inline std::atomic<long> allocations{0};
inline void count() {
    if (counting.load(std::memory_order_relaxed)) allocations.fetch_add(1, std::memory_order_relaxed);
}

// The allocations made (by any thread) while f runs; -1 when not counted.
template <class F>
long during(F&& f) {
    const long before = allocations.load();
    counting = true;
    f();
    counting = false;
    return XGRAD_ALLOC_COUNTER ? allocations.load() - before : -1;
}

}  // namespace alloc_counter

#if XGRAD_ALLOC_COUNTER
extern "C" {
void* __libc_malloc(std::size_t);
void* __libc_calloc(std::size_t, std::size_t);
void* __libc_realloc(void*, std::size_t);
void* __libc_memalign(std::size_t, std::size_t);
void __libc_free(void*);
}

extern "C" {
void* malloc(std::size_t n) {
    alloc_counter::count();
    return __libc_malloc(n);
}
void* calloc(std::size_t count, std::size_t n) {
    alloc_counter::count();
    return __libc_calloc(count, n);
}
void* realloc(void* p, std::size_t n) {
    alloc_counter::count();
    return __libc_realloc(p, n);
}
void* memalign(std::size_t alignment, std::size_t n) {
    alloc_counter::count();
    return __libc_memalign(alignment, n);
}
void* aligned_alloc(std::size_t alignment, std::size_t n) {
    alloc_counter::count();
    return __libc_memalign(alignment, n);
}
int posix_memalign(void** out, std::size_t alignment, std::size_t n) {
    if (alignment < sizeof(void*) || (alignment & (alignment - 1)) != 0) return EINVAL;
    alloc_counter::count();
    void* p = __libc_memalign(alignment, n);
    if (!p) return ENOMEM;
    *out = p;
    return 0;
}
void free(void* p) { __libc_free(p); }
}

// libstdc++'s operator new calls malloc already; defining it here makes the
// count independent of how the C++ runtime was built.
void* operator new(std::size_t n) {
    if (void* p = std::malloc(n)) return p;
    throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return operator new(n); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
#endif
