// The data-parallel training program that tests/test_distributed_processes.cpp
// launches with mpirun: tests/data_parallel_mlp.hpp's MLP, trained the way a
// distributed application should be (and mnist_gan will be):
//   - Distributed::run around everything, so that a failing rank ends the job;
//   - rank 0's parameters broadcast at the start, gradients averaged every step;
//   - parameters compared across ranks every --check-every steps;
//   - only rank 0 writes files (checkpoint.xgrad, log.csv), atomically; every
//     rank reads the checkpoint to resume (another rank count is fine: the
//     global batch and its random stream do not depend on it).
// --fail STEP:RANK:HOW makes rank RANK fail when it reaches step STEP (0:
// before the first collective, like unreadable data on one node): HOW is
// kill (SIGKILL), abort (std::abort), throw (an exception) or exit3 (return 3).
//
//   mpirun -np 2 mpi_worker --out DIR --steps N [--batch M] [--resume]
//          [--check-every K] [--fail STEP:RANK:HOW] [--order mpi|rank_order]
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <stdexcept>
#include <string>

#include <xgrad.hpp>
#include <xgrad/distributed.hpp>
#include <xgrad/io.hpp>

#include "data_parallel_mlp.hpp"

namespace {

struct Options {
    std::string out;
    long steps = 10, check_every = 1, fail_step = -1;
    std::size_t batch = 64;
    int fail_rank = -1;
    std::string fail_how;
    bool resume = false;
    xgrad::ReduceOrder order = xgrad::ReduceOrder::mpi;
};

long number(const std::string& text, const std::string& option) {
    std::size_t used = 0;
    const long value = std::stol(text, &used);
    if (used != text.size() || value < 0) throw std::invalid_argument(option + " expects a number >= 0, got '" + text + "'");
    return value;
}

Options parse(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) throw std::invalid_argument(a + " expects a value");
            return argv[++i];
        };
        if (a == "--out") {
            o.out = value();
        } else if (a == "--steps") {
            o.steps = number(value(), a);
        } else if (a == "--batch") {
            o.batch = static_cast<std::size_t>(number(value(), a));
        } else if (a == "--check-every") {
            o.check_every = number(value(), a);
        } else if (a == "--resume") {
            o.resume = true;
        } else if (a == "--order") {
            const std::string order = value();
            if (order != "mpi" && order != "rank_order") throw std::invalid_argument("--order expects mpi or rank_order");
            o.order = order == "mpi" ? xgrad::ReduceOrder::mpi : xgrad::ReduceOrder::rank_order;
        } else if (a == "--fail") {
            std::istringstream in(value());
            std::string step, rank;
            std::getline(in, step, ':');
            std::getline(in, rank, ':');
            std::getline(in, o.fail_how);
            o.fail_step = number(step, a);
            o.fail_rank = static_cast<int>(number(rank, a));
        } else {
            throw std::invalid_argument("unknown argument '" + a + "'");
        }
    }
    if (o.out.empty()) throw std::invalid_argument("--out DIR is required");
    return o;
}

// Returns the exit code the failure asks for (0: none).
int inject_failure(const Options& o, const xgrad::Distributed& d, long step) {
    if (step != o.fail_step || d.rank() != o.fail_rank) return 0;
    std::fprintf(stderr, "mpi_worker: rank %d fails at step %ld (%s)\n", d.rank(), step, o.fail_how.c_str());
    std::fflush(stderr);
    if (o.fail_how == "kill") std::raise(SIGKILL);
    if (o.fail_how == "abort") std::abort();
    if (o.fail_how == "throw") throw std::runtime_error("injected failure at step " + std::to_string(step));
    if (o.fail_how == "exit3") return 3;
    throw std::invalid_argument("--fail: unknown way to fail '" + o.fail_how + "'");
}

int train(xgrad::Distributed& d, const Options& o) {
    test::DataParallelMlp run(7, o.batch, d.rank(), d.size());  // refuses a batch that the rank count does not divide
    const std::string checkpoint = o.out + "/checkpoint.xgrad";
    std::string log = "step,loss\n";
    if (o.resume) {
        const xgrad::Archive saved = xgrad::read_archive(checkpoint);  // every rank reads
        run.load(saved);
        log = saved.text("log");
        const std::string ranks = saved.text("ranks");
        if (d.is_root() && ranks != std::to_string(d.size())) {
            std::fprintf(stderr,
                         "mpi_worker: resuming a run of %s ranks on %d: the same steps up to floating-point summation order\n",
                         ranks.c_str(), d.size());
        }
    }
    if (const int code = inject_failure(o, d, 0)) return code;
    d.broadcast(run.net);
    d.check_same(run.net.parameters(), run.steps());
    xgrad::GradientAllreduce reduce(d, run.net.parameters(), o.order);
    auto save = [&] {
        if (!d.is_root()) return;
        xgrad::Archive archive;
        run.save(archive);
        archive.put_text("log", log);
        archive.put_text("ranks", std::to_string(d.size()));
        xgrad::write_archive(checkpoint, archive);
        xgrad::AtomicFile file(o.out + "/log.csv");
        file.write(log);
        file.commit();
    };
    while (run.steps() < o.steps) {
        if (const int code = inject_failure(o, d, run.steps() + 1)) return code;
        double loss = run.step(&reduce);
        d.sum(&loss, 1);
        if (d.is_root()) log += std::to_string(run.steps()) + "," + std::to_string(loss / d.size()) + "\n";
        if (o.check_every > 0 && run.steps() % o.check_every == 0) d.check_same(run.net.parameters(), run.steps());
    }
    save();
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    return xgrad::Distributed::run(argc, argv, [&](xgrad::Distributed& d) {
        const Options o = parse(argc, argv);
        if (d.is_root()) std::filesystem::create_directories(o.out);
        return train(d, o);
    });
}
