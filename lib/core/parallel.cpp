#include <xgrad/core/parallel.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

// The BLAS library's own thread count, when it has a setter (meson.build
// detects it): xgrad keeps BLAS on one thread and parallelises itself.
#if defined(XGRAD_BLAS_SET_THREADS)
extern "C" void XGRAD_BLAS_SET_THREADS(int);
#endif

namespace xgrad {
namespace {

void cpu_relax() {
#if defined(__SSE2__)
    _mm_pause();
#endif
}

using Clock = std::chrono::steady_clock;

// How long an idle worker polls for the next job before it sleeps: a
// training step hands out jobs tens of microseconds apart, and waking a
// sleeping thread costs about as much as a job.
constexpr auto kSpin = std::chrono::microseconds(200);

// When another process holds a core, a worker is descheduled for whole time
// slices (milliseconds), with a block the caller then waits for, and its
// polling takes CPU from the caller: 2 threads ran a GAN step 2x slower
// than 1. So when the caller waits for the workers kLate longer than its own
// blocks took (more than a late wake-up explains), the pool runs jobs inline
// for a while (its workers go to sleep), then tries again. On a virtual
// machine a worker also loses a single time slice now and then with nothing
// else running: a fixed 100 ms for each such hiccup ran up to 15% of a
// 2-thread GAN run inline (docs/performance.md). So the first backoff is
// short, and it doubles, up to kBackoffMax, while each late job follows the
// end of the previous backoff within kRecur of its length: a core that
// stays taken reaches the long backoff after a few late jobs, a hiccup costs
// one short one.
constexpr auto kLate = std::chrono::microseconds(200);
constexpr auto kBackoffMin = std::chrono::milliseconds(1);
constexpr auto kBackoffMax = std::chrono::milliseconds(100);
constexpr int kRecur = 10;

// Block counts and indices are 16-bit fields of ThreadPool's claim word.
constexpr int kMaxThreads = 0xffff;

// The caller publishes a job by storing generation << 32 | blocks << 16 into
// `claim_`; every thread then claims block indices by incrementing its low
// 16 bits. With the generation and the block count in the same word, one
// compare-and-swap checks all three: a worker late from the previous job
// can never claim a block of the next one.
class ThreadPool {
public:
    // xgrad runs one thread until told otherwise, and OpenBLAS with it:
    // left at its default (every core), OpenBLAS would both compete with
    // the pool once it grows and malloc in every call.
    ThreadPool() {
#if defined(XGRAD_BLAS_SET_THREADS)
        XGRAD_BLAS_SET_THREADS(1);
#endif
    }
    ~ThreadPool() { resize(1); }

    int size() const { return static_cast<int>(workers_.size()) + 1; }

    void resize(int threads) {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            stop_ = true;
        }
        wake_.notify_all();
        for (std::thread& t : workers_) t.join();
        workers_.clear();
        stop_ = false;
        for (int i = 1; i < threads; ++i) workers_.emplace_back([this] { work_loop(); });
    }

    void run(std::size_t n, std::size_t blocks, detail::BlockFn fn, const void* f) {
        // A nested call, a second thread calling while the pool is busy, and
        // a backoff run the same blocks inline: results depend on the
        // number of threads only, never on timing.
        const Clock::time_point start = Clock::now();
        if (inside_ || workers_.empty() || start.time_since_epoch().count() < inline_until_.load(std::memory_order_relaxed) ||
            busy_.exchange(true, std::memory_order_acquire)) {
            for (std::size_t b = 0; b < blocks; ++b) fn(f, b * n / blocks, (b + 1) * n / blocks);
            return;
        }
        job_ = Job{fn, f, n};
        finished_.store(0, std::memory_order_relaxed);
        // 32 bits: it must survive the shift into the claim word when it wraps.
        const std::uint64_t generation = ((claim_.load(std::memory_order_relaxed) >> 32) + 1) & 0xffffffffu;
        // seq_cst here and on sleepers_: either the caller sees a sleeping
        // worker and wakes it, or the worker sees the new job before sleeping.
        claim_.store(generation << 32 | std::uint64_t(blocks) << 16);
        if (sleepers_.load() > 0) {
            std::lock_guard<std::mutex> lock(mutex_);
            wake_.notify_all();
        }
        work(generation);
        const Clock::time_point own_done = Clock::now();
        for (unsigned spins = 0; finished_.load(std::memory_order_acquire) < blocks; ++spins) {
            if (spins < 4096) {
                cpu_relax();
            } else {
                std::this_thread::yield();  // a descheduled worker holds a block: let it run
            }
        }
        const Clock::time_point end = Clock::now();
        if (end - own_done > (own_done - start) + kLate) back_off(end);
        busy_.store(false, std::memory_order_release);
    }

private:
    // Runs jobs inline from `now` on, for a backoff chosen as described at kLate.
    void back_off(Clock::time_point now) {
        const Clock::time_point last_end{Clock::duration{inline_until_.load(std::memory_order_relaxed)}};
        backoff_ = detail::next_backoff(now - last_end, backoff_);
        inline_until_.store((now + backoff_).time_since_epoch().count(), std::memory_order_relaxed);
    }

    struct Job {
        detail::BlockFn fn;
        const void* f;
        std::size_t n;
    };

    // Runs blocks of job `generation` until none is left to claim. job_ is
    // read only with a block claimed: the caller cannot publish the next job
    // before that block is finished.
    void work(std::uint64_t generation) {
        inside_ = true;
        for (;;) {
            std::uint64_t c = claim_.load(std::memory_order_acquire);
            do {
                if ((c >> 32) != generation || (c & 0xffff) >= ((c >> 16) & 0xffff)) {
                    inside_ = false;
                    return;
                }
            } while (!claim_.compare_exchange_weak(c, c + 1, std::memory_order_acq_rel, std::memory_order_acquire));
            const std::size_t b = c & 0xffff, blocks = (c >> 16) & 0xffff;
            job_.fn(job_.f, b * job_.n / blocks, (b + 1) * job_.n / blocks);
            finished_.fetch_add(1, std::memory_order_release);
        }
    }

    void work_loop() {
        std::uint64_t seen = claim_.load() >> 32;
        for (;;) {
            std::uint64_t generation = seen;
            if (!wait_for_job(seen, generation)) return;
            work(generation);
            seen = generation;
        }
    }

    // Polls for a job newer than `seen`, then sleeps; false when stopping.
    bool wait_for_job(std::uint64_t seen, std::uint64_t& generation) {
        const auto deadline = Clock::now() + kSpin;
        for (unsigned i = 1;; ++i) {
            generation = claim_.load(std::memory_order_acquire) >> 32;
            if (generation != seen) return true;
            if (stop_) return false;
            cpu_relax();
            if (i % 256 == 0 && Clock::now() > deadline) break;
        }
        std::unique_lock<std::mutex> lock(mutex_);
        sleepers_.fetch_add(1);
        wake_.wait(lock, [&] {
            generation = claim_.load() >> 32;
            return generation != seen || stop_;
        });
        sleepers_.fetch_sub(1);
        return !stop_;
    }

    std::vector<std::thread> workers_;
    Job job_{};
    std::atomic<std::uint64_t> claim_{0};
    std::atomic<std::size_t> finished_{0};
    std::atomic<bool> busy_{false}, stop_{false};
    std::atomic<int> sleepers_{0};
    std::atomic<Clock::rep> inline_until_{0};
    // The last backoff, written only by the caller that holds busy_.
    std::chrono::nanoseconds backoff_{kBackoffMin};
    std::mutex mutex_;
    std::condition_variable wake_;
    static thread_local bool inside_;
};
thread_local bool ThreadPool::inside_ = false;

ThreadPool& pool() {
    static ThreadPool p;
    return p;
}

}  // namespace

void set_num_threads(int n) {
    if (n < 1 || n > kMaxThreads) {
        throw std::invalid_argument("xgrad::set_num_threads: " + std::to_string(n) + " threads (1 to " +
                                    std::to_string(kMaxThreads) + ")");
    }
#if defined(XGRAD_BLAS_SET_THREADS)
    XGRAD_BLAS_SET_THREADS(1);
#endif
    pool().resize(n);
}

int num_threads() { return pool().size(); }

std::chrono::nanoseconds detail::next_backoff(std::chrono::nanoseconds since_last_end, std::chrono::nanoseconds last) {
    if (since_last_end >= kRecur * last) return kBackoffMin;
    return std::min<std::chrono::nanoseconds>(2 * last, kBackoffMax);
}

void detail::run_blocks(std::size_t n, std::size_t blocks, BlockFn fn, const void* f) { pool().run(n, blocks, fn, f); }

}  // namespace xgrad
