#include <xgrad/distributed.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <sstream>
#include <thread>

#include <xgrad/nn/module.hpp>

// Built with MPI when meson found it (-Dmpi=auto/enabled): XGRAD_WITH_MPI=1.
// The deprecated C++ bindings are not wanted: xgrad calls the C API.
#if XGRAD_WITH_MPI
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#endif

namespace xgrad {

namespace {

using Clock = std::chrono::steady_clock;
double seconds_between(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

// One Distributed at a time: MPI is process-wide, and a second object would
// finalise it under the first.
std::atomic<bool> live_instance{false};

// The process count the launcher announces in the environment (OpenMPI's
// mpirun: OMPI_COMM_WORLD_SIZE; MPICH/Hydra and Intel MPI: PMI_SIZE), or 0.
// A program built without MPI, or against another MPI than the launcher's,
// sees itself as one process of one while the launcher started several:
// each would train alone and they would overwrite each other's outputs.
int launcher_size(const char** variable) {
    for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"}) {
        const char* text = std::getenv(name);
        if (!text) continue;
        char* end = nullptr;
        const long n = std::strtol(text, &end, 10);
        if (end != text && *end == '\0' && n > 0 && n <= INT_MAX) {
            *variable = name;
            return static_cast<int>(n);
        }
    }
    return 0;
}

// One step of checksum()'s hash: multiply, rotate.
std::uint64_t mix(std::uint64_t h, std::uint64_t word) {
    h = (h ^ word) * 0x9E3779B97F4A7C15ull;
    return (h << 31) | (h >> 33);
}

int checked_count(std::size_t n, const char* what) {
    if (n > static_cast<std::size_t>(INT_MAX)) {
        throw std::length_error(std::string("xgrad::") + what + ": " + std::to_string(n) +
                                " floats in one collective; MPI counts stop at 2^31 - 1");
    }
    return static_cast<int>(n);
}

}  // namespace

// ---- the MPI layer: every MPI call of xgrad is in this block ------------------

#if XGRAD_WITH_MPI

struct Distributed::Mpi {
    MPI_Comm comm = MPI_COMM_NULL;
    bool finalize = false;  // this object started MPI, so it ends it
};

namespace {

std::string mpi_error_text(int code) {
    char text[MPI_MAX_ERROR_STRING];
    int length = 0;
    if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) return "MPI error " + std::to_string(code);
    return std::string(text, static_cast<std::size_t>(length));
}

using Settings = std::vector<std::pair<std::string, std::string>>;

// check_same_settings' text (name, NUL, value, NUL, ...) as a list.
Settings split_settings(const std::string& text) {
    Settings out;
    std::size_t at = 0;
    while (at < text.size()) {
        const std::size_t name_end = text.find('\0', at);
        const std::size_t value_end = text.find('\0', name_end + 1);
        out.emplace_back(text.substr(at, name_end - at), text.substr(name_end + 1, value_end - name_end - 1));
        at = value_end + 1;
    }
    return out;
}

// How `mine` (rank `rank`'s settings) differs from rank 0's, every
// difference named with both values; empty when they agree.
std::string settings_difference(const Settings& root, const Settings& mine, int rank) {
    std::string out;
    const auto add = [&](const std::string& name, const std::string& value, const std::string& root_value) {
        if (!out.empty()) out += "; ";
        out.append(name).append(" is ").append(value).append(" on rank ").append(std::to_string(rank));
        out.append(" but ").append(root_value).append(" on rank 0");
    };
    for (std::size_t i = 0; i < std::max(root.size(), mine.size()); ++i) {
        if (i >= mine.size()) {
            add(root[i].first, "missing", root[i].second);
        } else if (i >= root.size()) {
            add(mine[i].first, mine[i].second, "missing");
        } else if (mine[i].first != root[i].first) {
            add("setting " + std::to_string(i + 1), mine[i].first, root[i].first);
        } else if (mine[i].second != root[i].second) {
            add(mine[i].first, mine[i].second, root[i].second);
        }
    }
    return out;
}

// rank_order's point-to-point messages (on xgrad's private communicator),
// and GradientAllreduce's size check before every collective.
constexpr int kScatterTag = 1, kGatherTag = 2, kSizeTag = 3;

void check(int code, const char* call, int rank, int size) {
    if (code == MPI_SUCCESS) return;
    throw DistributedError(std::string(call) + " failed on rank " + std::to_string(rank) + " of " + std::to_string(size) + ": " +
                           mpi_error_text(code));
}

// MPI_Sendrecv that lets go of the core when the wait is long. MPI waits
// by polling; when another process holds the peer's core, the peer runs only
// when the scheduler preempts that process, and every message then costs a
// time slice (2 ranks on 2 cores beside one busy process: 70 ms per GAN step
// instead of 3). After kSpin of polling (ordinary waits, the ranks' jitter,
// stay as fast as MPI's), this polls with short sleeps, and the idle core
// can take the peer.
constexpr auto kSpin = std::chrono::milliseconds(1);

void exchange(const void* send, int to, void* receive, int from, int count, MPI_Datatype type, int tag, MPI_Comm comm, int rank,
              int size) {
    MPI_Request requests[2];
    check(MPI_Irecv(receive, count, type, from, tag, comm, &requests[0]), "MPI_Irecv", rank, size);
    check(MPI_Isend(send, count, type, to, tag, comm, &requests[1]), "MPI_Isend", rank, size);
    const Clock::time_point start = Clock::now();
    for (int done = 0;;) {
        check(MPI_Testall(2, requests, &done, MPI_STATUSES_IGNORE), "MPI_Testall", rank, size);
        if (done) return;
        if (Clock::now() - start > kSpin) std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
}

}  // namespace

bool Distributed::built_with_mpi() { return true; }

std::string Distributed::mpi_version() {
    char text[MPI_MAX_LIBRARY_VERSION_STRING];
    int length = 0;
    if (MPI_Get_library_version(text, &length) != MPI_SUCCESS) return "unknown MPI";
    std::string version(text, static_cast<std::size_t>(length));
    return version.substr(0, version.find('\n'));
}

void Distributed::start(int* argc, char*** argv) {
    int started = 0, ended = 0;
    MPI_Initialized(&started);
    MPI_Finalized(&ended);
    if (ended) {
        throw DistributedError(
            "MPI was already finalised in this process and cannot start again: keep one xgrad::Distributed "
            "for the whole program");
    }
    mpi_ = std::make_unique<Mpi>();
    int provided = 0;
    if (!started) {
        const int code = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
        if (code != MPI_SUCCESS) throw DistributedError("MPI_Init_thread failed: " + mpi_error_text(code));
        mpi_->finalize = true;
    } else {
        MPI_Query_thread(&provided);
    }
    if (provided < MPI_THREAD_FUNNELED) {
        throw DistributedError("the MPI library provides thread level " + std::to_string(provided) +
                               ", xgrad needs MPI_THREAD_FUNNELED (its worker threads coexist with MPI calls from one thread)");
    }
    // A private communicator: xgrad's collectives never match a program's
    // own messages, and errors on it are returned, not fatal.
    check(MPI_Comm_dup(MPI_COMM_WORLD, &mpi_->comm), "MPI_Comm_dup", 0, 0);
    check(MPI_Comm_set_errhandler(mpi_->comm, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler", 0, 0);
    check(MPI_Comm_rank(mpi_->comm, &rank_), "MPI_Comm_rank", 0, 0);
    check(MPI_Comm_size(mpi_->comm, &size_), "MPI_Comm_size", rank_, 0);
}

void Distributed::stop() noexcept {
    if (!mpi_) return;
    if (mpi_->comm != MPI_COMM_NULL) MPI_Comm_free(&mpi_->comm);
    if (mpi_->finalize) MPI_Finalize();
    mpi_.reset();
}

Distributed::~Distributed() {
    if (mpi_ && std::uncaught_exceptions() > 0 && size_ > 1) {
        abort("error: an exception is leaving the scope of xgrad::Distributed (Distributed::run would print its message)", 1);
    }
    stop();
    live_instance = false;
}

void Distributed::abort(const std::string& message, int code) const {
    std::fprintf(stderr, "xgrad: rank %d of %d: %s\n", rank_, size_, message.c_str());
    std::fflush(stderr);
    std::fflush(stdout);
    if (mpi_ && size_ > 1) {
        // When every rank fails at once (bad arguments, say), OpenMPI 4.1's
        // mpirun crashed now and then (1 run in 5 under ASan) while
        // collecting their MPI_Abort reports together. Rank 0 goes first;
        // by the time the others follow, mpirun is usually stopping them.
        if (rank_ != 0) std::this_thread::sleep_for(std::chrono::milliseconds(300));
        MPI_Abort(mpi_->comm, code);
    }
    if (mpi_ && mpi_->finalize) MPI_Finalize();
    std::exit(code);
}

void Distributed::broadcast(const std::vector<Var>& variables) const {
    if (size_ == 1) return;
    // Rank 0's list (length, then each element count) first, so that a
    // mismatch is an error on every rank instead of a collective that
    // never matches.
    unsigned long long length = variables.size();
    check(MPI_Bcast(&length, 1, MPI_UNSIGNED_LONG_LONG, 0, mpi_->comm), "MPI_Bcast", rank_, size_);
    std::vector<unsigned long long> counts(length);
    if (rank_ == 0) {
        for (std::size_t i = 0; i < variables.size(); ++i) counts[i] = variables[i].numel();
    }
    check(MPI_Bcast(counts.data(), checked_count(counts.size(), "Distributed::broadcast"), MPI_UNSIGNED_LONG_LONG, 0, mpi_->comm),
          "MPI_Bcast", rank_, size_);
    std::string mismatch;
    if (length != variables.size()) {
        mismatch = "rank " + std::to_string(rank_) + " broadcasts " + std::to_string(variables.size()) + " variables, rank 0 " +
                   std::to_string(length);
    } else {
        for (std::size_t i = 0; i < variables.size() && mismatch.empty(); ++i) {
            if (counts[i] != variables[i].numel()) {
                mismatch = "variable " + std::to_string(i) + " has " + std::to_string(variables[i].numel()) +
                           " elements on rank " + std::to_string(rank_) + ", " + std::to_string(counts[i]) + " on rank 0";
            }
        }
    }
    if (any(!mismatch.empty())) {
        throw DistributedError(
            "xgrad::Distributed::broadcast: " +
            (mismatch.empty() ? std::string("another rank's variables differ from rank 0's (its message says how)") : mismatch));
    }
    for (Var v : variables) {
        // Rank 0 only sends: its values (and their versions) stay as they are.
        Tensor& value = rank_ == 0 ? const_cast<Tensor&>(v.value()) : v.mutable_value();
        check(MPI_Bcast(value.data(), checked_count(value.size(), "Distributed::broadcast"), MPI_FLOAT, 0, mpi_->comm),
              "MPI_Bcast", rank_, size_);
    }
}

void Distributed::check_same(std::uint64_t local, long step, const char* what) const {
    if (size_ == 1) return;
    check(MPI_Allgather(&local, 1, MPI_UINT64_T, gathered_.data(), 1, MPI_UINT64_T, mpi_->comm), "MPI_Allgather", rank_, size_);
    if (std::all_of(gathered_.begin(), gathered_.end(), [&](std::uint64_t c) { return c == gathered_[0]; })) return;
    std::ostringstream message;
    message << what << " differ across ranks";
    if (step >= 0) message << " at step " << step;
    message << ": rank 0 has checksum 0x" << std::hex << gathered_[0];
    int listed = 0;
    for (int r = 1; r < size_; ++r) {
        if (gathered_[static_cast<std::size_t>(r)] == gathered_[0]) continue;
        if (++listed > 8) {
            message << ", ...";
            break;
        }
        message << ", rank " << std::dec << r << " has 0x" << std::hex << gathered_[static_cast<std::size_t>(r)];
    }
    throw DistributedError(message.str());
}

void Distributed::average(const std::vector<Var>& variables) const {
    if (size_ == 1) return;
    // The element counts first: a collective over different counts would fail or never match.
    std::uint64_t counts = mix(0, variables.size());
    for (const Var& v : variables) counts = mix(counts, v.numel());
    check_same(counts, -1, "the element counts of the variables to average");
    const float scale = 1.f / static_cast<float>(size_);
    for (Var v : variables) {
        Tensor& value = v.mutable_value();
        check(MPI_Allreduce(MPI_IN_PLACE, value.data(), checked_count(value.size(), "Distributed::average"), MPI_FLOAT, MPI_SUM,
                            mpi_->comm),
              "MPI_Allreduce", rank_, size_);
        for (float& x : value) x *= scale;
    }
}

void Distributed::check_same_settings(const std::vector<std::pair<std::string, std::string>>& settings) const {
    if (size_ == 1) return;
    // Rank 0's list as one text, each name and value ended by a NUL.
    std::string text;
    if (rank_ == 0) {
        for (const auto& [name, value] : settings) {
            text.append(name).push_back('\0');
            text.append(value).push_back('\0');
        }
    }
    unsigned long long length = text.size();
    check(MPI_Bcast(&length, 1, MPI_UNSIGNED_LONG_LONG, 0, mpi_->comm), "MPI_Bcast", rank_, size_);
    text.resize(length);
    check(MPI_Bcast(text.data(), checked_count(text.size(), "Distributed::check_same_settings"), MPI_CHAR, 0, mpi_->comm),
          "MPI_Bcast", rank_, size_);
    const std::string mismatch = settings_difference(split_settings(text), settings, rank_);
    // Which ranks differ; the first of them tells every rank how.
    std::vector<int> differs(static_cast<std::size_t>(size_));
    int mine = mismatch.empty() ? 0 : 1;
    check(MPI_Allgather(&mine, 1, MPI_INT, differs.data(), 1, MPI_INT, mpi_->comm), "MPI_Allgather", rank_, size_);
    const auto first = std::find(differs.begin(), differs.end(), 1);
    if (first == differs.end()) return;
    const int teller = static_cast<int>(first - differs.begin());
    std::string told = mismatch;
    length = told.size();
    check(MPI_Bcast(&length, 1, MPI_UNSIGNED_LONG_LONG, teller, mpi_->comm), "MPI_Bcast", rank_, size_);
    told.resize(length);
    check(MPI_Bcast(told.data(), checked_count(told.size(), "Distributed::check_same_settings"), MPI_CHAR, teller, mpi_->comm),
          "MPI_Bcast", rank_, size_);
    std::string ranks;
    int listed = 0;
    for (int r = 0; r < size_; ++r) {
        if (!differs[static_cast<std::size_t>(r)]) continue;
        ranks += (listed++ == 0 ? "" : ", ") + std::to_string(r);
    }
    throw RanksDisagree("the ranks must run with the same settings: " + told + " (" + (listed == 1 ? "rank " : "ranks ") + ranks +
                        (listed == 1 ? " differs" : " differ") + " from rank 0)");
}

void Distributed::sum(double* values, std::size_t n) const {
    if (size_ == 1 || n == 0) return;
    check(MPI_Allreduce(MPI_IN_PLACE, values, checked_count(n, "Distributed::sum"), MPI_DOUBLE, MPI_SUM, mpi_->comm),
          "MPI_Allreduce", rank_, size_);
}

bool Distributed::any(bool flag) const {
    if (size_ == 1) return flag;
    int value = flag ? 1 : 0;
    check(MPI_Allreduce(MPI_IN_PLACE, &value, 1, MPI_INT, MPI_LOR, mpi_->comm), "MPI_Allreduce", rank_, size_);
    return value != 0;
}

void Distributed::barrier() const {
    if (size_ > 1) check(MPI_Barrier(mpi_->comm), "MPI_Barrier", rank_, size_);
}

void GradientAllreduce::reduce(std::size_t count) {
    const Distributed& d = distributed_;
    MPI_Comm comm = d.mpi_->comm;
    // Collectives of different sizes would pair up (MPI_Allreduce then
    // writes past the smaller buffer). One 8-byte exchange around the ring
    // finds them: if any two ranks differ, some rank's previous one does.
    {
        const std::uint64_t mine = count;
        std::uint64_t previous_count = 0;
        const int next = (d.rank_ + 1) % d.size_, previous = (d.rank_ - 1 + d.size_) % d.size_;
        exchange(&mine, next, &previous_count, previous, 1, MPI_UINT64_T, kSizeTag, comm, d.rank_, d.size_);
        if (previous_count != mine) {
            throw DistributedError("xgrad::GradientAllreduce::average: rank " + std::to_string(d.rank_) + " sends " +
                                   std::to_string(mine) + " floats, rank " + std::to_string(previous) + " sends " +
                                   std::to_string(previous_count) +
                                   ": the ranks' calls do not match (every rank must freeze the same parameters, pass "
                                   "the same number of extra values and make the same calls)");
        }
    }
    if (order_ == ReduceOrder::mpi) {
        check(MPI_Allreduce(MPI_IN_PLACE, buffer_.data(), static_cast<int>(count), MPI_FLOAT, MPI_SUM, comm), "MPI_Allreduce",
              d.rank_, d.size_);
        return;
    }
    // A ring allreduce written out, so that the order of the sums is
    // xgrad's: the buffer is cut into N parts; rank r receives part r of
    // every other rank (pairwise exchanges, partner r + k at step k), sums
    // the N contributions in rank order into its own part, then the parts
    // travel around the ring until every rank has all of them. Each rank
    // sends and receives 2 (N - 1) / N of the buffer, as in a ring
    // allreduce. Point-to-point calls only: OpenMPI's MPI_Allgather (Bruck,
    // for 3 ranks) and MPI_Alltoall allocate scratch memory, these do not.
    const int ranks = d.size_, rank = d.rank_;
    const std::size_t part = (count + std::size_t(ranks) - 1) / std::size_t(ranks);
    const int n = static_cast<int>(part);
    auto at = [&](std::vector<float>& v, int r) { return v.data() + std::size_t(r) * part; };
    std::fill(buffer_.begin() + static_cast<std::ptrdiff_t>(count),
              buffer_.begin() + static_cast<std::ptrdiff_t>(std::size_t(ranks) * part),
              0.f);  // the padding sums as zeros
    for (int k = 1; k < ranks; ++k) {
        const int to = (rank + k) % ranks, from = (rank - k + ranks) % ranks;
        exchange(at(buffer_, to), to, at(received_, from), from, n, MPI_FLOAT, kScatterTag, comm, rank, ranks);
    }
    float* mine = at(buffer_, rank);
    std::memcpy(at(received_, rank), mine, part * sizeof(float));
    std::memcpy(mine, at(received_, 0), part * sizeof(float));
    for (int r = 1; r < ranks; ++r) {
        const float* from = at(received_, r);
        for (std::size_t i = 0; i < part; ++i) mine[i] += from[i];
    }
    const int next = (rank + 1) % ranks, previous = (rank - 1 + ranks) % ranks;
    for (int k = 0; k + 1 < ranks; ++k) {
        const int send = (rank - k + ranks) % ranks, receive = (rank - k - 1 + 2 * ranks) % ranks;
        exchange(at(buffer_, send), next, at(buffer_, receive), previous, n, MPI_FLOAT, kGatherTag, comm, rank, ranks);
    }
}

#else  // without MPI: one process, every collective has nothing to do

struct Distributed::Mpi {};

bool Distributed::built_with_mpi() { return false; }
std::string Distributed::mpi_version() { return "none (built without MPI)"; }
void Distributed::start(int*, char***) {}
void Distributed::stop() noexcept {}
Distributed::~Distributed() { live_instance = false; }

void Distributed::abort(const std::string& message, int code) const {
    std::fprintf(stderr, "xgrad: rank 0 of 1: %s\n", message.c_str());
    std::fflush(stderr);
    std::fflush(stdout);
    std::exit(code);
}

void Distributed::broadcast(const std::vector<Var>&) const {}
void Distributed::average(const std::vector<Var>&) const {}
void Distributed::check_same(std::uint64_t, long, const char*) const {}
void Distributed::check_same_settings(const std::vector<std::pair<std::string, std::string>>&) const {}
void Distributed::sum(double*, std::size_t) const {}
bool Distributed::any(bool flag) const { return flag; }
void Distributed::barrier() const {}
void GradientAllreduce::reduce(std::size_t) {}

#endif

// ---- what does not depend on MPI ---------------------------------------------

Distributed::Distributed() { init(nullptr, nullptr); }
Distributed::Distributed(int& argc, char**& argv) { init(&argc, &argv); }

bool Distributed::launched() {
    const char* variable = nullptr;
    return launcher_size(&variable) > 0 || std::getenv("PMIX_RANK") != nullptr;  // PMIX_RANK: srun --mpi=pmix
}

void Distributed::init(int* argc, char*** argv) {
    if (live_instance.exchange(true)) {
        throw std::logic_error(
            "xgrad::Distributed: one already exists in this process (MPI is process-wide): pass that one around");
    }
    try {
        start(argc, argv);
        const char* variable = nullptr;
        const int launched = launcher_size(&variable);
        if (launched > size_) {
            const std::string said = std::string(variable) + "=" + std::to_string(launched);
            throw DistributedError(built_with_mpi() ? "the launcher started " + std::to_string(launched) + " processes (" + said +
                                                          ") but MPI sees " + std::to_string(size_) + ": this program's MPI (" +
                                                          mpi_version() + ") is not the launcher's"
                                                    : "the launcher started " + std::to_string(launched) + " processes (" + said +
                                                          ") but xgrad was built without MPI, so each would train alone: install "
                                                          "libopenmpi-dev and rebuild (meson setup -Dmpi=enabled)");
        }
        gathered_.resize(static_cast<std::size_t>(size_));
    } catch (...) {
        stop();  // nothing collective has happened yet: each rank ends MPI on its own
        live_instance = false;
        throw;
    }
}

void Distributed::broadcast(const Module& module) const {
    broadcast(module.parameters());
    broadcast(module.buffers());
}

void Distributed::check_same(const std::vector<Var>& variables, long step) const {
    check_same(checksum(variables), step, "parameters");
}

int Distributed::run(int& argc, char**& argv, const std::function<int(Distributed&)>& body) {
    std::unique_ptr<Distributed> distributed;
    try {
        distributed = std::make_unique<Distributed>(argc, argv);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "xgrad: error: %s\n", e.what());
        return 1;
    }
    Distributed& d = *distributed;
    std::string failure;
    int code = 1;
    try {
        code = body(d);
    } catch (const RanksDisagree& e) {
        // Every rank is here: no rank waits for another, so the job can end
        // in order, and MPI_Abort would cut off the other ranks' messages.
        std::fprintf(stderr, "xgrad: rank %d of %d: error: %s\n", d.rank(), d.size(), e.what());
        return 1;
    } catch (const std::exception& e) {
        failure = e.what();
    } catch (...) {
        failure = "an exception that is not a std::exception";
    }
    if (!failure.empty()) {
        if (d.size() > 1) d.abort("error: " + failure, 1);
        std::fprintf(stderr, "error: %s\n", failure.c_str());
        return 1;
    }
    if (code != 0 && d.size() > 1)
        d.abort("exit code " + std::to_string(code) + ": stopping all " + std::to_string(d.size()) + " ranks", code);
    return code;
}

std::uint64_t checksum(const std::vector<Var>& variables, std::uint64_t seed) {
    // Four independent lanes over 64-bit words (one dependency chain would
    // cost ~3 cycles per word), folded at the end.
    std::uint64_t lanes[4] = {seed ^ 0x243F6A8885A308D3ull, seed ^ 0x13198A2E03707344ull, seed ^ 0xA4093822299F31D0ull,
                              seed ^ 0x082EFA98EC4E6C89ull};
    for (const Var& v : variables) {
        const Tensor& value = v.value();
        const unsigned char* bytes = reinterpret_cast<const unsigned char*>(value.data());
        const std::size_t size = value.size() * sizeof(float);
        lanes[0] = mix(lanes[0], value.size());
        std::size_t i = 0;
        for (; i + 32 <= size; i += 32) {
            for (int l = 0; l < 4; ++l) {
                std::uint64_t w;
                std::memcpy(&w, bytes + i + 8 * l, 8);
                lanes[l] = mix(lanes[l], w);
            }
        }
        for (; i < size; i += 4) {
            std::uint32_t w;
            std::memcpy(&w, bytes + i, 4);
            lanes[1] = mix(lanes[1], w);
        }
    }
    std::uint64_t h = 0;
    for (std::uint64_t lane : lanes) h = mix(h, lane);
    return h ^ (h >> 29);
}

GradientAllreduce::GradientAllreduce(const Distributed& distributed, std::vector<Var> parameters, ReduceOrder order,
                                     std::size_t extra)
    : distributed_(distributed), parameters_(std::move(parameters)), order_(order), extra_(extra) {
    std::size_t total = 1 + extra;  // the flag slot and the extra values
    for (std::size_t i = 0; i < parameters_.size(); ++i) {
        if (!parameters_[i].is_leaf()) {
            throw std::invalid_argument("xgrad::GradientAllreduce: parameter " + std::to_string(i) + " is the result of '" +
                                        parameters_[i].op_name() + "', not a leaf");
        }
        total += parameters_[i].numel();
    }
    const std::size_t ranks = static_cast<std::size_t>(distributed_.size());
    const std::size_t padded = order_ == ReduceOrder::rank_order ? (total + ranks - 1) / ranks * ranks : total;
    checked_count(padded, "GradientAllreduce");
    buffer_.assign(padded, 0.f);
    if (order_ == ReduceOrder::rank_order && ranks > 1) received_.assign(padded, 0.f);
}

bool GradientAllreduce::average(bool flag) { return average(flag, nullptr, 0); }

bool GradientAllreduce::average(bool flag, float* sums, std::size_t n) {
    if (n > extra_) {
        throw std::invalid_argument("xgrad::GradientAllreduce::average: " + std::to_string(n) + " extra values, but room for " +
                                    std::to_string(extra_) + " was made at construction");
    }
    if (distributed_.size() == 1) {
        last_count_ = 0;
        return flag;
    }
    const Clock::time_point start = Clock::now();
    std::size_t count = 0;
    // The buffer holds the gradients' sizes at construction (and the flag
    // and extra slots): a parameter replaced by a larger one would not fit.
    const std::size_t room = buffer_.size() - 1 - extra_;
    for (std::size_t i = 0; i < parameters_.size(); ++i) {
        const Var& p = parameters_[i];
        if (!p.requires_grad()) continue;
        const Tensor& g = p.grad();
        if (g.size() > room - count) {
            throw std::logic_error("xgrad::GradientAllreduce::average: the gradient of parameter " + std::to_string(i) + " is " +
                                   shape_string(g) + ", larger than at construction (a parameter's shape must not change)");
        }
        std::memcpy(buffer_.data() + count, g.data(), g.size() * sizeof(float));
        count += g.size();
    }
    buffer_[count] = flag ? 1.f : 0.f;
    if (n > 0) std::memcpy(buffer_.data() + count + 1, sums, n * sizeof(float));
    last_count_ = count + 1 + n;
    const Clock::time_point sent = Clock::now();
    reduce(last_count_);
    const Clock::time_point received = Clock::now();
    // The mean: the sum times 1/N (exact for N a power of two).
    const float scale = 1.f / static_cast<float>(distributed_.size());
    std::size_t offset = 0;
    for (Var& p : parameters_) {
        if (!p.requires_grad()) continue;
        Tensor& g = p.mutable_grad();
        float* out = g.data();
        const float* in = buffer_.data() + offset;
        for (std::size_t i = 0, n = g.size(); i < n; ++i) out[i] = in[i] * scale;
        offset += g.size();
    }
    const bool any_flag = buffer_[count] > 0.5f;
    if (n > 0) std::memcpy(sums, buffer_.data() + count + 1, n * sizeof(float));
    mpi_seconds_ += seconds_between(sent, received);
    total_seconds_ += seconds_between(start, Clock::now());
    return any_flag;
}

DistributedSampler::DistributedSampler(std::size_t global_batch, int rank, int ranks) : global_batch_(global_batch) {
    if (ranks < 1 || rank < 0 || rank >= ranks) {
        throw std::invalid_argument("xgrad::DistributedSampler: rank " + std::to_string(rank) + " of " + std::to_string(ranks) +
                                    " ranks (expected 0 <= rank < ranks)");
    }
    const std::size_t n = static_cast<std::size_t>(ranks), r = static_cast<std::size_t>(rank);
    if (global_batch == 0 || global_batch % n != 0) {
        throw std::invalid_argument("a global batch of " + std::to_string(global_batch) +
                                    " samples cannot be split evenly across " + std::to_string(ranks) +
                                    " ranks: the batch must be a positive multiple of " + std::to_string(ranks));
    }
    begin_ = r * (global_batch / n);
    end_ = begin_ + global_batch / n;
}

const std::size_t* DistributedSampler::local(const std::vector<std::size_t>& global) const {
    if (global.size() != global_batch_) {
        throw std::invalid_argument("xgrad::DistributedSampler::local: " + std::to_string(global.size()) +
                                    " sample indices, expected the global batch's " + std::to_string(global_batch_));
    }
    return global.data() + begin_;
}

void DistributedSampler::take_rows(const Tensor& global, Tensor& local) const {
    const bool fits = global.dimension() >= 1 && global.shape()[0] == global_batch_ && local.dimension() == global.dimension() &&
                      local.shape()[0] == local_batch() &&
                      std::equal(global.shape().begin() + 1, global.shape().end(), local.shape().begin() + 1);
    if (!fits) {
        Shape expected = global.shape();
        if (!expected.empty()) expected[0] = local_batch();
        throw ShapeError("xgrad::DistributedSampler::take_rows: a global batch " + shape_string(global) + " (expected " +
                         std::to_string(global_batch_) + " rows) into " + shape_string(local) + " (expected " +
                         shape_string(expected) + ")");
    }
    const std::size_t row = global_batch_ == 0 ? 0 : global.size() / global_batch_;
    std::memcpy(local.data(), global.data() + begin_ * row, local.size() * sizeof(float));
}

}  // namespace xgrad
