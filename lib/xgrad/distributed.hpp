// xgrad_distributed: data-parallel training over MPI (the xgrad_distributed
// library; docs/distributed.md has the launch recipes, the guarantees and the
// measurements).
//
// N processes ("ranks", started by mpirun, srun or any MPI launcher) each
// hold the whole model. Every step, each rank computes the gradients of its
// own slice of the global batch (DistributedSampler), the ranks average them
// (GradientAllreduce: one MPI_Allreduce over one fused buffer), and each rank
// takes the same optimizer step. Parameters and optimizer states therefore
// stay identical on every rank, which Distributed::check_same verifies
// cheaply. N ranks compute the same step as one process with the same global
// batch, up to the order of floating-point summation (see ReduceOrder).
// DataParallel puts these pieces behind one call per phase of a training
// step.
//
// The header names no MPI type, and the library also builds without MPI
// (meson option -Dmpi=disabled, or no MPI installed): Distributed is then one
// process (rank 0 of 1), every collective is a no-op, and a launch by mpirun
// or srun with several processes is refused. Programs need no #ifdef.
//
// Failures: every MPI call returns its error (MPI_ERRORS_RETURN on xgrad's
// communicator) and xgrad throws DistributedError naming the call and MPI's
// message. A rank that fails must end the whole job, or the others wait for
// it forever inside their next collective: Distributed::run() does that (an
// exception or a nonzero exit code on one rank becomes MPI_Abort, which makes
// OpenMPI's mpirun and Slurm's srun stop every rank). A rank killed by a
// signal is noticed by the launcher, which stops the others (OpenMPI: about
// a second; srun needs --kill-on-bad-exit=1).
//
// Threads: only the thread that constructed Distributed may call into it
// (MPI_THREAD_FUNNELED); xgrad's own worker threads never do.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <xgrad/core/tensor.hpp>
#include <xgrad/core/var.hpp>

namespace xgrad {

class Module;

// An MPI call failed, or the ranks disagree (different parameter shapes or
// checksums, a launch that does not match the build). The message names the
// call or the ranks involved.
struct DistributedError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// Thrown on every rank at the same point, by a collective that found the
// ranks in disagreement (Distributed::check_same_settings). Distributed::run
// ends such a job in order (every rank prints its message, finalises MPI and
// exits with 1) instead of aborting it, which would lose what the other
// ranks print.
struct RanksDisagree : DistributedError {
    using DistributedError::DistributedError;
};

class Distributed {
public:
    // Starts MPI (MPI_Init_thread, MPI_THREAD_FUNNELED) unless the program
    // already did, and works on a private duplicate of MPI_COMM_WORLD whose
    // errors are returned (and thrown), not fatal. One Distributed may exist
    // at a time, and with MPI only one per process lifetime (MPI cannot be
    // started twice). Throws DistributedError when MPI fails to start, when
    // the launcher says it started more processes than MPI reports (a
    // program built without MPI, or against another MPI than the launcher's).
    Distributed();
    Distributed(int& argc, char**& argv);
    // MPI_Finalize (if this object started MPI). Finalize waits for every
    // rank, so when it would run during an exception's unwinding (this rank
    // failed while the others may still wait for it) it aborts the job
    // instead (see abort()).
    ~Distributed();
    Distributed(const Distributed&) = delete;
    Distributed& operator=(const Distributed&) = delete;

    // Whether this library was built with MPI (otherwise: always 1 process).
    static bool built_with_mpi();
    // Whether a launcher (mpirun, srun) started this process: its
    // environment says how many processes it started (OMPI_COMM_WORLD_SIZE,
    // PMI_SIZE, PMIX_RANK). A program may then skip Distributed when started plainly:
    // starting MPI in a lone process (a singleton) costs ~0.4 s here.
    static bool launched();
    // The MPI library's version line ("Open MPI v4.1.4, ..."), or
    // "none (built without MPI)".
    static std::string mpi_version();

    int rank() const { return rank_; }
    int size() const { return size_; }
    bool is_root() const { return rank_ == 0; }

    // Runs body(distributed) as the whole of a program's main(), and ends the
    // process so that no rank can wait forever for a failed one:
    //  - body returns 0 on every rank: MPI_Finalize, and run() returns 0;
    //  - body throws on a rank: "xgrad: rank R of N: error: <what()>" on
    //    stderr, then MPI_Abort with exit code 1, which stops every rank
    //    (the launcher exits with 1);
    //  - body returns nonzero on a rank (the program already said why): the
    //    job is aborted with that exit code;
    //  - body throws RanksDisagree (on every rank at once): each rank prints
    //    its line, MPI is finalised, and run() returns 1.
    // With one process, an exception prints the same line and returns 1, and
    // a nonzero code is returned as it is. Failing to start MPI prints the
    // error and returns 1.
    static int run(int& argc, char**& argv, const std::function<int(Distributed&)>& body);

    // Prints "xgrad: rank R of N: <message>" on stderr and ends the whole
    // job with exit code `code`: MPI_Abort with several ranks, std::exit
    // with one. Never returns.
    [[noreturn]] void abort(const std::string& message, int code = 1) const;

    // Copies the values of `variables` on rank 0 into the same variables on
    // every other rank (mutable_value(): graphs recorded before refuse to
    // run backward). Parameters and buffers at the start of training, so that
    // every rank starts from rank 0's initialisation whatever its own was.
    // Throws DistributedError when a rank's list differs from rank 0's in
    // length or in a variable's element count.
    void broadcast(const std::vector<Var>& variables) const;
    // The module's parameters and buffers (running statistics).
    void broadcast(const Module& module) const;

    // Replaces the value of each of `variables` by its mean over the ranks
    // (mutable_value()). For state that each rank updates from its own
    // slice of the batch, such as batch norm's running statistics, before a
    // checkpoint or an evaluation. Throws DistributedError when the ranks'
    // lists differ in length or element counts.
    void average(const std::vector<Var>& variables) const;

    // Compares `checksum` (see xgrad::checksum) across ranks. Throws
    // DistributedError on every rank if any rank's differs from rank 0's:
    // "<what> differ across ranks at step <step>: rank 0 has 0x..., rank 2
    // has 0x..." (ranks that agree with rank 0 are not listed; no step when
    // step < 0). Costs one MPI_Allgather of 8 bytes per rank; allocates
    // nothing.
    void check_same(std::uint64_t checksum, long step, const char* what = "parameters") const;
    // check_same(xgrad::checksum(variables), step, "parameters").
    void check_same(const std::vector<Var>& variables, long step) const;

    // Compares settings across ranks: (name, value) texts, listed in the
    // same order on every rank, for everything that decides what a rank
    // computes or when it calls a collective (the run length, the batch, the
    // seed, a fingerprint of the data, ...). Rank 0 broadcasts its list and
    // every rank compares it with its own. When any rank differs, throws
    // RanksDisagree on every rank, naming each setting in which the
    // first differing rank differs and both values: "the ranks must run
    // with the same settings: --steps is 120 on rank 1 but 150 on rank 0
    // (ranks 1, 2 differ from rank 0)". Ranks that disagree would otherwise
    // call different collectives and wait for each other forever, or pair
    // collectives of different sizes. Collective; call it once at start-up,
    // before any collective whose shape depends on the settings. One
    // process: returns at once.
    void check_same_settings(const std::vector<std::pair<std::string, std::string>>& settings) const;

    // Sums values[0..n) over all ranks in place (statistics for a log line:
    // each rank's loss over its own slice). Allocates nothing.
    void sum(double* values, std::size_t n) const;
    // True on every rank when `flag` is true on any rank.
    bool any(bool flag) const;
    void barrier() const;

private:
    void init(int* argc, char*** argv);
    void start(int* argc, char*** argv);  // the MPI parts of init() and of the destructor
    void stop() noexcept;
    struct Mpi;
    friend class GradientAllreduce;

    std::unique_ptr<Mpi> mpi_;  // null without MPI
    int rank_ = 0, size_ = 1;
    mutable std::vector<std::uint64_t> gathered_;  // check_same's receive buffer, one entry per rank
};

// A bitwise checksum of the values of `variables` (and of their element
// counts), in list order. Equal on two ranks exactly when the values are
// equal bit for bit (up to hash collisions, which are 2^-64 unlikely). Reads
// each value once (~0.1 ms for 215k parameters);
// allocates nothing. Chain it with `seed` to cover several lists.
std::uint64_t checksum(const std::vector<Var>& variables, std::uint64_t seed = 0);

// How GradientAllreduce sums the ranks' gradients.
enum class ReduceOrder {
    // MPI_Allreduce: the MPI library chooses the algorithm (ring, recursive
    // doubling, hardware offload). Every rank gets the same result; its
    // summation order depends on the rank count and the library's tuning.
    mpi,
    // A ring allreduce in point-to-point messages: rank r receives part r
    // of every rank's buffer, sums the parts in rank order (rank 0 + rank 1
    // + ...), and the sums go round the ring. The bandwidth of a ring
    // allreduce, no allocation, and the same bits as one process summing
    // the N slices' gradients in rank order, for any N and any MPI library.
    rank_order,
};

// Averages the gradients of a fixed list of parameters across all ranks:
// bound once to the list (an optimizer's parameters), then average() after
// every backward(), before the optimizer step.
class GradientAllreduce {
public:
    // Preallocates one buffer for every parameter's gradient (plus one flag
    // slot): average() then allocates nothing (with ReduceOrder::mpi, OpenMPI
    // 4.1's MPI_Allreduce itself mallocs a scratch buffer on every call).
    // Throws std::invalid_argument for a Var that is not a leaf. `extra`:
    // room for that many more values in every message (see average()).
    GradientAllreduce(const Distributed& distributed, std::vector<Var> parameters, ReduceOrder order = ReduceOrder::rank_order,
                      std::size_t extra = 0);

    // Packs the gradients of the parameters that currently require one into
    // the buffer, runs one collective, multiplies by 1/N and unpacks. Frozen
    // parameters are neither sent nor changed; every rank must have the same
    // parameters frozen (they run the same program). `flag` travels in the
    // same message: the result is true on every rank when any rank passed
    // true (a stop request seen by one rank, such as a SIGTERM, then stops
    // every rank at the same step). One process: returns `flag` and changes
    // nothing.
    // Every call checks its message size first: each rank sends its size to
    // the next rank in a ring (8 bytes) and compares the previous rank's with
    // its own. Ranks whose calls do not match (other parameters frozen,
    // another n, calls of another GradientAllreduce) then fail with
    // DistributedError naming both sizes, on every rank that sees a
    // difference (at least one; Distributed::run then ends the job), instead
    // of pairing messages of different sizes.
    bool average(bool flag = false);
    // The same, and n values (n <= the constructor's `extra`) travel in the
    // same message and come back in `sums` summed over the ranks: what every
    // rank needs after the step (the global batch's mean loss, say) without
    // a collective of its own. (OpenMPI 4.1's MPI_Allreduce, which
    // Distributed::sum uses, mallocs on every call; this allocates nothing.)
    bool average(bool flag, float* sums, std::size_t n);

    const std::vector<Var>& parameters() const { return parameters_; }
    ReduceOrder order() const { return order_; }
    // The number of floats the last average() sent (gradients + 1 flag).
    std::size_t last_count() const { return last_count_; }
    // Seconds spent in average() since construction: all of it, and inside
    // the MPI calls only (which includes waiting for the slowest rank).
    double total_seconds() const { return total_seconds_; }
    double mpi_seconds() const { return mpi_seconds_; }

private:
    void reduce(std::size_t count);

    const Distributed& distributed_;
    std::vector<Var> parameters_;
    ReduceOrder order_;
    std::size_t extra_;
    std::vector<float> buffer_, received_;  // received_: rank_order's incoming parts
    std::size_t last_count_ = 0;
    double total_seconds_ = 0, mpi_seconds_ = 0;
};

// Which part of every global batch this rank computes: rows [begin, end) =
// [r*m/N, (r+1)*m/N) of a global batch of m samples. Every rank draws the
// same global batch (its sample indices, its noise) from the same seed and
// step, and takes its own rows: N ranks together then compute exactly the
// batch one process would, whatever N is.
class DistributedSampler {
public:
    // Throws std::invalid_argument naming both numbers when `ranks` does not
    // divide `global_batch` (or rank is not in [0, ranks)).
    DistributedSampler(std::size_t global_batch, int rank, int ranks);
    DistributedSampler(std::size_t global_batch, const Distributed& distributed)
        : DistributedSampler(global_batch, distributed.rank(), distributed.size()) {}

    std::size_t global_batch() const { return global_batch_; }
    std::size_t local_batch() const { return end_ - begin_; }
    std::size_t begin() const { return begin_; }
    std::size_t end() const { return end_; }

    // This rank's entries of a global batch's sample indices (global_batch()
    // of them): a pointer into `global`, local_batch() long. Throws
    // std::invalid_argument when `global` has another length.
    const std::size_t* local(const std::vector<std::size_t>& global) const;
    // Copies this rank's rows (first dimension) of a global-batch tensor
    // into `local`, which must have local_batch() rows of the same shape
    // otherwise (ShapeError names both shapes). Allocates nothing.
    void take_rows(const Tensor& global, Tensor& local) const;

private:
    std::size_t global_batch_, begin_, end_;
};

// The data-parallel plumbing of a training step in one object, so that the
// step reads as it does in one process, with one call per phase (as
// PyTorch's DistributedDataParallel hides its own inside backward()):
//  - every rank draws each global batch whole, from the same random streams
//    as one process, and computes only its own rows (local_rows);
//  - after each backward() the ranks average the gradients of an
//    optimizer's parameters (Gradients::average), a few numbers of the step
//    (its mean loss, a stop request) travelling in the same message;
//  - buffers that each rank updates from its own rows, such as batch norm's
//    running statistics, are averaged before anything uses or saves them
//    (average_buffers).
// With one process each call is the identity or does nothing, so a program
// is written once. After the first step nothing allocates.
class DataParallel {
public:
    class Gradients;

    // One process: it computes every row of every batch.
    explicit DataParallel(std::size_t global_batch);
    // As a rank of `distributed`, which must outlive this object. Throws
    // std::invalid_argument naming both numbers when the ranks do not divide
    // global_batch.
    DataParallel(std::size_t global_batch, const Distributed& distributed, ReduceOrder order = ReduceOrder::rank_order);

    int ranks() const { return distributed_ ? distributed_->size() : 1; }
    std::size_t local_batch() const { return sampler_.local_batch(); }

    // Rank 0's parameters and buffers of `module` on every rank (before
    // training: every rank then starts from rank 0's initialisation).
    void broadcast(const Module& module) const;

    // This rank's rows of `global`, a batch of global_batch rows (first
    // dimension): `global` itself in one process, otherwise a copy in a
    // buffer that this object keeps for `global` (allocated at the first
    // call) and refills at each call.
    const Var& local_rows(const Var& global);

    // Averages the gradients of `parameters` (one optimizer's) over the
    // ranks; `statistics`: room for that many numbers in the same message.
    Gradients gradients(std::vector<Var> parameters, std::size_t statistics = 0) const;

    // Buffers that each rank updates from its own rows (batch norm's running
    // statistics): average_buffers() replaces each by its mean over the ranks.
    void share_buffers(std::vector<Var> buffers) { buffers_ = std::move(buffers); }
    // Collective: every rank calls it at the same point.
    void average_buffers() const;

private:
    const Distributed* distributed_ = nullptr;
    ReduceOrder order_ = ReduceOrder::rank_order;
    DistributedSampler sampler_;
    std::deque<std::pair<const Tensor*, Var>> rows_;  // local_rows' buffers, by the global batch they hold rows of
    std::vector<Var> buffers_;
};

// One optimizer's gradients averaged over the ranks (a GradientAllreduce);
// in one process, nothing to do.
class DataParallel::Gradients {
public:
    Gradients() = default;
    // After backward(), before the optimizer step.
    void average();
    // The same, with `flag` and means[0..n) (n at most the `statistics` of
    // DataParallel::gradients) in the same message: returns whether any
    // rank's flag was set (a stop request seen by one rank stops all of them
    // at the same step), and replaces each means[i] by its mean over the
    // ranks (each rank's value the mean over its own rows: over equal slices,
    // the mean over the global batch).
    bool average(bool flag, float* means, std::size_t n);
    // Seconds spent averaging: in all, and inside MPI (which includes waiting
    // for the slowest rank); 0 in one process.
    double seconds() const;
    double mpi_seconds() const;

private:
    friend class DataParallel;
    std::unique_ptr<GradientAllreduce> allreduce_;  // null in one process
    float ranks_ = 1.f;
};

}  // namespace xgrad
