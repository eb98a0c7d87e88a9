// The dispatcher of xgrad/core/simd.hpp: picks one kernel table
// (lib/core/simd/kernels.cpp, compiled per level) the first time a kernel
// runs, by what the CPU supports and XGRAD_SIMD.
//
// Why not xsimd::dispatch (xsimd 8.1, config/xsimd_cpuid.hpp): its CPU check
// reads the AVX bit from the wrong CPUID leaf (0x80000001 instead of 1) and
// never asks the OS (XGETBV) whether it saves the AVX/AVX-512 registers, so
// on a CPU or VM where AVX-512 is present but not enabled it would select
// code that faults; it also has no way to force a level for a test. GCC's
// and clang's __builtin_cpu_supports check both, and one table of function
// pointers chosen once is all the dispatch needs.
#include <xgrad/core/simd.hpp>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#include "simd/table.hpp"

namespace xgrad::simd {
namespace {

constexpr Level kLevels[] = {Level::sse2, Level::avx2, Level::avx512};

// The level named `text`, if it is one.
bool parse(const char* text, Level& level) {
    for (Level l : kLevels) {
        if (std::strcmp(text, name(l)) == 0) {
            level = l;
            return true;
        }
    }
    return false;
}

// The table of a level this build has (XGRAD_SIMD_<LEVEL> from lib/meson.build), else null.
const detail::Kernels* table_of(Level level) {
    switch (level) {
        case Level::sse2:
            return &detail::sse2_kernels;
        case Level::avx2:
#if XGRAD_SIMD_AVX2
            return &detail::avx2_kernels;
#else
            return nullptr;
#endif
        case Level::avx512:
#if XGRAD_SIMD_AVX512
            return &detail::avx512_kernels;
#else
            return nullptr;
#endif
    }
    return nullptr;
}

const detail::Kernels* initial_table() {
    const Level best = best_level();
    const char* request = std::getenv("XGRAD_SIMD");
    const LevelChoice choice = choose_level(request, best);
    if (!choice.honoured) {
        // A benchmark or test run at the wrong level should say so; a
        // training run should not stop over it.
        Level asked = best;
        if (parse(request, asked)) {
            std::fprintf(stderr, "xgrad: XGRAD_SIMD=%s, but this CPU or build supports at most %s: using %s\n", request,
                         name(best), name(choice.level));
        } else {
            std::fprintf(stderr, "xgrad: XGRAD_SIMD=%s is not sse2, avx2, avx512 or auto: using %s\n", request,
                         name(choice.level));
        }
    }
    return table_of(choice.level);
}

// Chosen on first use, not by a static initializer, so that an op run from
// another library's static initializer finds it ready. Atomic only so that
// set_level is no data race; a relaxed load costs what a plain one does.
std::atomic<const detail::Kernels*>& active() {
    static std::atomic<const detail::Kernels*> table{initial_table()};
    return table;
}

const detail::Kernels& kernels() { return *active().load(std::memory_order_relaxed); }

}  // namespace

const char* name(Level level) {
    switch (level) {
        case Level::sse2:
            return "sse2";
        case Level::avx2:
            return "avx2";
        case Level::avx512:
            return "avx512";
    }
    return "unknown";
}

bool cpu_supports(Level level) {
    if (!table_of(level)) return false;
#if defined(__x86_64__) || defined(__i386__)
    // libgcc fills its CPU model in a constructor; this may run before it.
    __builtin_cpu_init();
    switch (level) {
        case Level::sse2:
            return true;
        case Level::avx2:
            return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
        case Level::avx512:
            return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512cd") &&
                   __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw") &&
                   __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma");
    }
    return false;
#else
    return level == Level::sse2;
#endif
}

Level best_level() {
    Level best = Level::sse2;
    for (Level l : kLevels) {
        if (cpu_supports(l)) best = l;
    }
    return best;
}

LevelChoice choose_level(const char* request, Level best) {
    if (request == nullptr || *request == '\0' || std::strcmp(request, "auto") == 0) return {best, true};
    Level asked = best;
    if (parse(request, asked) && asked <= best) return {asked, true};
    return {best, false};
}

Level level() { return kernels().level; }

void set_level(Level level) {
    if (!cpu_supports(level)) {
        throw std::invalid_argument(std::string("xgrad::simd::set_level: this CPU or build cannot run ") + name(level) +
                                    " (best: " + name(best_level()) + ")");
    }
    active().store(table_of(level), std::memory_order_relaxed);
}

void exp(const float* x, float* y, std::size_t n) { kernels().exp(x, y, n); }
void log(const float* x, float* y, std::size_t n) { kernels().log(x, y, n); }
void sigmoid(const float* x, float* y, std::size_t n) { kernels().sigmoid(x, y, n); }
void tanh(const float* x, float* y, std::size_t n) { kernels().tanh(x, y, n); }
void softplus(const float* x, float* y, std::size_t n) { kernels().softplus(x, y, n); }
void relu(const float* x, float* y, std::size_t n) { kernels().relu(x, y, n); }
void leaky_relu(const float* x, float* y, std::size_t n, float slope) { kernels().leaky_relu(x, y, n, slope); }
void sigmoid_backward(const float* y, const float* dy, float* dx, std::size_t n) { kernels().sigmoid_backward(y, dy, dx, n); }
void tanh_backward(const float* y, const float* dy, float* dx, std::size_t n) { kernels().tanh_backward(y, dy, dx, n); }
void relu_backward(const float* y, const float* dy, float* dx, std::size_t n) { kernels().relu_backward(y, dy, dx, n); }
void leaky_relu_backward(const float* x, const float* dy, float* dx, std::size_t n, float slope) {
    kernels().leaky_relu_backward(x, dy, dx, n, slope);
}
void adam(float* p, const float* g, float* m, float* v, std::size_t n, const AdamConstants& c) {
    kernels().adam(p, g, m, v, n, c);
}

}  // namespace xgrad::simd
