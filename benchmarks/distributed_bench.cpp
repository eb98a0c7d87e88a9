// Data-parallel training on this machine, in one MPI job of 2 ranks:
//
// 1. The fused gradient allreduce (GradientAllreduce::average, both reduce
//    orders) for the parameter counts of the reference and dcgan presets
//    (D and G, as each optimizer step reduces them, and both together).
//    Median of 300 calls, each started together (a barrier before), so the
//    time is the collective's, not the ranks' skew.
// 2. mnist_gan's training step (gan::Gan::step of the reference preset:
//    D 784-128-1, G 100-128-784, global batch 128, Adam) three ways,
//    interleaved round by round so that load from elsewhere hits all alike:
//      A  1 process x 2 threads (rank 0 alone, xgrad::set_num_threads(2)),
//      B  2 ranks x 1 thread (Gan::distribute: each rank computes 64 of the
//         128 samples, the gradients averaged before each optimizer step),
//      C  1 process x 1 thread. With B it gives the two figures of the
//         scaling estimate (docs/distributed.md): a step of m samples takes
//         c m + f in one process and c m / 2 + f + averaging on each of 2
//         ranks, f being what every rank repeats whatever its share
//         (drawing the whole global batch, Adam over all parameters).
//    While rank 0 runs A or C alone, rank 1 sleeps (a polling MPI wait
//    would take a core). Every thread is pinned to its own CPU (pin_to). B
//    reports the time inside the gradient averaging (packing, the
//    collective and waiting for the other rank, unpacking) as the
//    communication share, and the heap allocations per step.
//    Before timing, A's and B's parameters after 10 steps from the same
//    start are compared (the equivalence error).
//
//   mpirun --bind-to none -np 2 build-perf/benchmarks/distributed_bench [--rounds R] [--steps S] [--order mpi|rank_order]
// --bind-to none: OpenMPI binds each of 2 ranks to one core by default; the
// program pins its threads itself (A needs both cores for rank 0).
// The last line (rank 0) is machine-readable: RESULT key=value ...
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <sched.h>
#include <sys/resource.h>
#include <unistd.h>

#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>

#include <xgrad.hpp>
#include <xgrad/distributed.hpp>

#include "alloc_counter.hpp"
#include "gan.hpp"
#include "presets.hpp"
#include "relative_difference.hpp"
#include "stats.hpp"
#include "synthetic_images.hpp"

namespace {

using xgrad::Tensor;
using xgrad::Var;
using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

std::size_t count_of(const std::vector<Var>& parameters) {
    std::size_t n = 0;
    for (const Var& p : parameters) n += p.numel();
    return n;
}

// CPU seconds: the whole machine's busy time (/proc/stat), and this
// process's (getrusage). Their difference over the run is what other
// processes took: the benchmark prints it, since the cores are shared.
double machine_busy_seconds() {
    std::FILE* f = std::fopen("/proc/stat", "r");
    if (!f) return 0;
    unsigned long long user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0;
    const int n = std::fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &user, &nice, &system, &idle, &iowait, &irq,
                              &softirq, &steal);
    std::fclose(f);
    return n == 8 ? double(user + nice + system + irq + softirq + steal) / double(sysconf(_SC_CLK_TCK)) : 0;
}

double own_cpu_seconds() {
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    return double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + 1e-6 * double(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

// Pins the calling thread to one CPU. Unpinned, the two threads of A
// often ended up on one core on this 2-vCPU machine (the kernel wakes the
// pool's worker on the CPU of the thread that woke it): A then ran at 1
// thread's speed or worse, for whole phases (4.4 ms instead of 2.2 ms, in
// gan_step too from time to time). Pinning is what a user of either layout
// does (OMP_PROC_BIND, mpirun --bind-to core), so each layout is measured
// with its threads on their own cores.
void pin_to(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof(set), &set) != 0)
        throw std::runtime_error("sched_setaffinity to CPU " + std::to_string(cpu) + " failed");
}

// xgrad::set_num_threads(threads) with the worker (if any) on CPU 1 and the
// calling thread on CPU 0: the worker inherits the affinity of the thread
// that starts it.
void threads_pinned(int threads) {
    pin_to(1);
    xgrad::set_num_threads(threads);
    pin_to(0);
}

// Waits for every rank without polling: a rank that waits while rank 0
// computes alone must leave the cores to it.
void sleeping_barrier() {
    MPI_Request request;
    MPI_Ibarrier(MPI_COMM_WORLD, &request);
    for (int done = 0;;) {
        MPI_Test(&request, &done, MPI_STATUS_IGNORE);
        if (done) return;
        std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
}

struct AllreduceTime {
    double median_us, p90_us;
};

AllreduceTime time_allreduce(const xgrad::Distributed& d, std::size_t floats, xgrad::ReduceOrder order, int calls) {
    Var p(Tensor({floats - 1}, 0.f), true);  // + average()'s flag slot = `floats`
    for (std::size_t i = 0; i < floats - 1; ++i) p.mutable_grad()(i) = float(i % 7);
    xgrad::GradientAllreduce reduce(d, {p}, order);
    for (int i = 0; i < 20; ++i) reduce.average();
    std::vector<double> us;
    for (int i = 0; i < calls; ++i) {
        d.barrier();
        const Clock::time_point start = Clock::now();
        reduce.average();
        us.push_back(1000.0 * ms_since(start));
    }
    // Rank 0 reports the slower rank's time: the collective ends when both do.
    double mine[2] = {bench::percentile(us, 0.5), bench::percentile(us, 0.9)}, worst[2];
    MPI_Allreduce(mine, worst, 2, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    return {worst[0], worst[1]};
}

// Times `steps` calls of gan.step(data), each call's ms appended to `ms`.
void time_steps(gan::Gan& gan, bench::SyntheticImages& data, int steps, std::vector<double>& ms) {
    for (int s = 0; s < steps; ++s) {
        const Clock::time_point start = Clock::now();
        gan.step(data);
        ms.push_back(ms_since(start));
    }
}

struct Options {
    int rounds = 15, steps = 40;
    xgrad::ReduceOrder order = xgrad::ReduceOrder::rank_order;
};

Options parse(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (i + 1 >= argc) throw std::invalid_argument(a + " expects a value");
        const std::string v = argv[++i];
        if (a == "--rounds") {
            o.rounds = std::max(1, std::stoi(v));
        } else if (a == "--steps") {
            o.steps = std::max(1, std::stoi(v));
        } else if (a == "--order" && (v == "mpi" || v == "rank_order")) {
            o.order = v == "mpi" ? xgrad::ReduceOrder::mpi : xgrad::ReduceOrder::rank_order;
        } else {
            throw std::invalid_argument("unknown argument '" + a + " " + v +
                                        "' (expected --rounds N, --steps N, --order mpi|rank_order)");
        }
    }
    return o;
}

int benchmark(xgrad::Distributed& d, const Options& o) {
    if (d.size() != 2) throw std::runtime_error("run with 2 ranks: mpirun --bind-to none -np 2 distributed_bench");
    cpu_set_t cpus;
    sched_getaffinity(0, sizeof(cpus), &cpus);
    if (d.is_root() && CPU_COUNT(&cpus) < 2) {
        throw std::runtime_error("rank 0 may use " + std::to_string(CPU_COUNT(&cpus)) +
                                 " core: launch with mpirun --bind-to none (1 process x 2 threads needs two)");
    }
    const bool root = d.is_root();
    pin_to(d.rank());  // B: rank r on CPU r
    const char* coretype = std::getenv("OPENBLAS_CORETYPE");
    if (root) {
        std::printf("distributed_bench: %s; OPENBLAS_CORETYPE=%s; reduce order %s\n", xgrad::Distributed::mpi_version().c_str(),
                    coretype ? coretype : "(unset)", o.order == xgrad::ReduceOrder::mpi ? "mpi" : "rank_order");
    }

    // ---- 1. the allreduce alone
    gan::Gan reference(gan::reference_preset(), 1), dcgan(gan::dcgan_preset(), 1);
    const std::size_t ref_d = count_of(reference.discriminator().parameters()),
                      ref_g = count_of(reference.generator().parameters());
    const std::size_t dcgan_d = count_of(dcgan.discriminator().parameters()), dcgan_g = count_of(dcgan.generator().parameters());
    struct Size {
        const char* name;
        std::size_t floats;
    };
    const Size sizes[] = {{"reference D", ref_d}, {"reference G", ref_g}, {"reference D+G", ref_d + ref_g},
                          {"dcgan D", dcgan_d},   {"dcgan G", dcgan_g},   {"dcgan D+G", dcgan_d + dcgan_g}};
    if (root)
        std::printf("\nallreduce of one fused buffer, 2 ranks (median / p90 of 300 calls, us)\n%-14s %9s %8s %17s %17s\n",
                    "parameters", "floats", "MB", "mpi", "rank_order");
    double ref_step_us[2] = {0, 0}, dcgan_step_us[2] = {0, 0};
    for (const Size& s : sizes) {
        const AllreduceTime mpi = time_allreduce(d, s.floats + 1, xgrad::ReduceOrder::mpi, 300);
        const AllreduceTime ordered = time_allreduce(d, s.floats + 1, xgrad::ReduceOrder::rank_order, 300);
        if (root) {
            std::printf("%-14s %9zu %8.2f %8.0f / %6.0f %8.0f / %6.0f\n", s.name, s.floats, 4e-6 * double(s.floats),
                        mpi.median_us, mpi.p90_us, ordered.median_us, ordered.p90_us);
        }
        // A training step reduces D's and G's gradients separately.
        if (s.floats == ref_d || s.floats == ref_g) {
            ref_step_us[0] += mpi.median_us;
            ref_step_us[1] += ordered.median_us;
        }
        if (s.floats == dcgan_d || s.floats == dcgan_g) {
            dcgan_step_us[0] += mpi.median_us;
            dcgan_step_us[1] += ordered.median_us;
        }
    }
    if (root) {
        std::printf(
            "per training step (D's + G's allreduce): reference %.0f us (mpi) / %.0f us (rank_order), dcgan %.0f / %.0f us\n",
            ref_step_us[0], ref_step_us[1], dcgan_step_us[0], dcgan_step_us[1]);
    }

    // ---- 2. the GAN step, three ways (every rank and layout draws from the same images)
    bench::SyntheticImages images(8000, 784, 42);
    const std::uint64_t seed = 1;
    gan::Gan two_ranks(gan::reference_preset(), seed);
    two_ranks.distribute(d, o.order);
    std::unique_ptr<gan::Gan> two_threads, one_thread;
    if (root) {
        two_threads = std::make_unique<gan::Gan>(gan::reference_preset(), seed);
        one_thread = std::make_unique<gan::Gan>(gan::reference_preset(), seed);
    }
    // Equivalence: 10 steps from the same start.
    for (int s = 0; s < 10; ++s) two_ranks.step(images);
    double equivalence = 0;
    if (root) {
        for (int s = 0; s < 10; ++s) two_threads->step(images);
        equivalence = test::relative_difference(two_ranks.parameters(), two_threads->parameters());
        std::printf("\nequivalence: parameters after 10 steps, 2 ranks vs 1 process: max relative difference %.2g (per tensor)\n",
                    equivalence);
    }
    d.check_same(two_ranks.parameters(), 10);
    sleeping_barrier();

    std::vector<double> a_ms, b_ms, c_ms, b_comm_ms, b_mpi_ms;
    const double busy_before = machine_busy_seconds(), own_before = own_cpu_seconds();
    const Clock::time_point timing_start = Clock::now();
    long b_allocations = 0;
    for (int round = 0; round < o.rounds; ++round) {
        if (root) {
            threads_pinned(2);
            time_steps(*two_threads, images, o.steps, a_ms);  // A: 1 process x 2 threads
            threads_pinned(1);
            time_steps(*one_thread, images, o.steps, c_ms);  // C: 1 process x 1 thread
        }
        sleeping_barrier();
        d.barrier();
        for (int s = 0; s < o.steps; ++s) {  // B: 2 ranks x 1 thread
            const double comm_before = two_ranks.allreduce_seconds(), mpi_before = two_ranks.allreduce_mpi_seconds();
            const Clock::time_point start = Clock::now();
            b_allocations += alloc_counter::during([&] { two_ranks.step(images); });
            b_ms.push_back(ms_since(start));
            b_comm_ms.push_back(1000.0 * (two_ranks.allreduce_seconds() - comm_before));
            b_mpi_ms.push_back(1000.0 * (two_ranks.allreduce_mpi_seconds() - mpi_before));
        }
        d.check_same(two_ranks.parameters(), 10 + long(round + 1) * o.steps);
    }
    double cpu[2] = {own_cpu_seconds() - own_before, 0};
    d.sum(cpu, 1);  // both ranks' CPU time
    const double others = machine_busy_seconds() - busy_before - cpu[0], wall = ms_since(timing_start) / 1000.0;
    if (!root) return 0;
    const double a = bench::percentile(a_ms, 0.5), b = bench::percentile(b_ms, 0.5), c = bench::percentile(c_ms, 0.5);
    const double comm = bench::percentile(b_comm_ms, 0.5);
    // C = c m + f and B = c m / 2 + f + comm give f = 2 (B - comm) - C.
    const double c_fixed = std::max(0.0, 2.0 * (b - comm) - c), c_compute = c - c_fixed;
    const std::size_t steps = b_ms.size();
    double load[3] = {0, 0, 0};
    getloadavg(load, 3);
    std::printf(
        "\nreference GAN step, global batch 128 (medians of %zu steps, %d rounds interleaved; load average %.2f %.2f %.2f;\n"
        "other processes took %.0f%% of a core during these %.0f s)\n",
        steps, o.rounds, load[0], load[1], load[2], 100.0 * std::max(others, 0.0) / wall, wall);
    std::printf("  A  1 process x 2 threads   %6.3f ms/step   (p90 %.3f)\n", a, bench::percentile(a_ms, 0.9));
    std::printf("  B  2 ranks x 1 thread      %6.3f ms/step   (p90 %.3f)   B / A = %.3f\n", b, bench::percentile(b_ms, 0.9),
                b / a);
    std::printf("     of which averaging      %6.3f ms (%.1f%%: pack, 2 collectives incl. waiting for the other rank, unpack)\n",
                comm, 100.0 * comm / b);
    std::printf("     inside the MPI calls    %6.3f ms (the rest of the averaging is packing and unpacking)\n",
                bench::percentile(b_mpi_ms, 0.5));
    std::printf("     heap allocations/step   %.2f\n", double(b_allocations) / double(steps));
    std::printf(
        "  C  1 process x 1 thread    %6.3f ms/step: with B, forward + backward %.3f ms (%.2f us per sample) and\n"
        "     %.3f ms repeated by every rank whatever its share (2 (B - averaging) - C)\n",
        c, c_compute, 1000.0 * c_compute / 128.0, c_fixed);
    std::printf(
        "RESULT ranks=2 order=%s a_1x2threads_ms=%.4f b_2x1rank_ms=%.4f b_over_a=%.4f comm_ms=%.4f comm_share=%.4f "
        "c_1x1thread_ms=%.4f c_compute_ms=%.4f c_fixed_ms=%.4f allocations_per_step=%.2f allreduce_ref_step_us=%.1f "
        "allreduce_dcgan_step_us=%.1f ref_d_params=%zu ref_g_params=%zu dcgan_d_params=%zu dcgan_g_params=%zu equivalence=%.3g "
        "other_load_cores=%.2f\n",
        o.order == xgrad::ReduceOrder::mpi ? "mpi" : "rank_order", a, b, b / a, comm, comm / b, c, c_compute, c_fixed,
        double(b_allocations) / double(steps), ref_step_us[o.order == xgrad::ReduceOrder::mpi ? 0 : 1],
        dcgan_step_us[o.order == xgrad::ReduceOrder::mpi ? 0 : 1], ref_d, ref_g, dcgan_d, dcgan_g, equivalence,
        std::max(others, 0.0) / wall);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    return xgrad::Distributed::run(argc, argv, [&](xgrad::Distributed& d) { return benchmark(d, parse(argc, argv)); });
}
