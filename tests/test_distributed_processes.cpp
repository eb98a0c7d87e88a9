// Whole MPI jobs: tests/mpi_worker.cpp launched by mpirun (each run bounded
// by `timeout 60`), for what only whole jobs show: a rank that dies or
// fails ends the job with an error in bounded time, only rank 0 writes
// files, resuming under MPI (with the same or another rank count).
// meson passes XGRAD_MPIRUN (the launcher and its options) and
// XGRAD_MPI_WORKER, and runs this file only when MPI was found.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <utility>
#include <vector>

#include <sys/wait.h>

#include <xgrad/io.hpp>

#include "helpers.hpp"
#include "idx_files.hpp"
#include "relative_difference.hpp"

namespace {

namespace fs = std::filesystem;

std::string environment(const char* variable) {
    const char* value = std::getenv(variable);
    if (!value || !*value) throw std::runtime_error(std::string(variable) + " is not set: run this test through meson test");
    return value;
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

struct Job {
    int code = -1;  // the exit code, or 128 + the signal that ended the launcher
    double seconds = 0;
    std::string err;
};

// Runs a shell command with its output in `logs`; how long it took, its
// exit code and its stderr.
Job run_logged(std::string command, const test::TempDir& logs) {
    command += " >'" + logs.file("stdout") + "' 2>'" + logs.file("stderr") + "' </dev/null";
    const auto start = std::chrono::steady_clock::now();
    const int status = std::system(command.c_str());
    Job job;
    job.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    job.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    job.err = read_file(logs.file("stderr"));
    return job;
}

// mpirun -np `ranks` PROGRAM ARGS (ranks == 0: the program alone, a plain
// launch), stopped by timeout after 60 s (exit code 124). PROGRAM is the
// executable named by the environment variable `program`.
Job launch(const char* program, int ranks, const std::vector<std::string>& args, const test::TempDir& logs) {
    std::string command = "timeout 60 ";
    if (ranks > 0) command += environment("XGRAD_MPIRUN") + " -np " + std::to_string(ranks) + " ";
    command += "'" + environment(program) + "'";
    for (const std::string& a : args) command += " '" + a + "'";
    return run_logged(std::move(command), logs);
}

Job launch(int ranks, const std::vector<std::string>& args, const test::TempDir& logs) {
    return launch("XGRAD_MPI_WORKER", ranks, args, logs);
}

std::size_t occurrences(const std::string& text, const std::string& part) {
    std::size_t n = 0;
    for (std::size_t at = text.find(part); at != std::string::npos; at = text.find(part, at + 1)) ++n;
    return n;
}

std::vector<std::string> file_names(const fs::path& dir) {
    std::vector<std::string> names;
    for (const auto& entry : fs::directory_iterator(dir)) names.push_back(entry.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
}

// mpirun -np 1 PROGRAM ARGS[0] : -np 1 PROGRAM ARGS[1]: two ranks started
// with different command lines (the launcher's MPMD form), stopped by
// timeout after 60 s.
Job launch_two(const char* program, const std::vector<std::string> (&args)[2], const test::TempDir& logs) {
    std::string command = "timeout 60 " + environment("XGRAD_MPIRUN");
    for (int rank = 0; rank < 2; ++rank) {
        command += std::string(rank > 0 ? " :" : "") + " -np 1 '" + environment(program) + "'";
        for (const std::string& a : args[rank]) command += " '" + a + "'";
    }
    return run_logged(std::move(command), logs);
}

// mnist_gan on `ranks` ranks (0: a plain launch) on the 28 x 28 images in `data`.
Job mnist_gan(int ranks, const fs::path& data, const fs::path& out, std::vector<std::string> args, const test::TempDir& logs) {
    args.insert(args.end(), {"--data", data.string(), "--out", out.string(), "--log-every", "1"});
    return launch("XGRAD_MNIST_GAN", ranks, args, logs);
}

// A failure injected into one rank of a 2-rank job of 100000 steps: the job
// must end with an error long before it could have finished.
Job failing_job(const std::string& failure) {
    const test::TempDir out, logs;
    const Job job = launch(2, {"--out", out.path().string(), "--steps", "100000", "--fail", failure}, logs);
    CAPTURE(job.err);
    std::printf("--fail %s: the job ended with exit code %d after %.1f s\n", failure.c_str(), job.code, job.seconds);
    CHECK(job.code != 0);
    CHECK(job.code != 124);  // not stopped by the timeout
    CHECK(job.seconds < 30);
    return job;
}

// The largest relative difference between the tensors of two archives with
// the same entries (0: bitwise equal).
double max_relative_difference(const xgrad::Archive& a, const xgrad::Archive& b) {
    double worst = 0;
    REQUIRE(a.tensors().size() == b.tensors().size());
    for (const auto& [name, x] : a.tensors()) {
        REQUIRE(x.shape() == b.tensor(name).shape());
        worst = std::max(worst, test::relative_difference(x, b.tensor(name)));
    }
    return worst;
}

}  // namespace

TEST_CASE("a rank that dies or fails ends the whole job with an error within seconds") {
    struct Failure {
        const char* injected;  // --fail STEP:RANK:HOW
        int code;              // the launcher's exit code (0: any nonzero)
        const char* message;   // in its stderr
    };
    const Failure failures[] = {
        {"3:1:kill", 0, "exited on signal 9"},  // SIGKILL: mpirun notices and stops the others
        {"3:1:abort", 0, "exited on signal 6"},
        {"3:1:throw", 1, "xgrad: rank 1 of 2: error: injected failure at step 3"},
        {"0:0:throw", 1, "xgrad: rank 0 of 2: error: injected failure at step 0"},  // before any collective: bad data on one node
        {"3:1:exit3", 3, "xgrad: rank 1 of 2: exit code 3: stopping all 2 ranks"},
    };
    for (const Failure& f : failures) {
        CAPTURE(f.injected);
        const Job job = failing_job(f.injected);
        if (f.code != 0) CHECK(job.code == f.code);
        CHECK(contains(job.err, f.message));
    }
}

TEST_CASE("a global batch that the rank count does not divide is refused, naming both") {
    const test::TempDir out, logs;
    const Job job = launch(3, {"--out", out.path().string(), "--batch", "64"}, logs);
    CAPTURE(job.err);
    CHECK(job.code == 1);
    CHECK(contains(job.err, "a global batch of 64 samples cannot be split evenly across 3 ranks"));
}

TEST_CASE("only rank 0 writes files; every rank resumes from them, with the same or another rank count") {
    const test::TempDir whole, interrupted, other_count, logs;
    // 10 steps in one go, on 2 ranks.
    Job job = launch(2, {"--out", whole.path().string(), "--steps", "10"}, logs);
    CAPTURE(job.err);
    REQUIRE(job.code == 0);
    std::vector<std::string> files;
    for (const auto& entry : fs::directory_iterator(whole.path())) files.push_back(entry.path().filename().string());
    std::sort(files.begin(), files.end());
    CHECK(files == std::vector<std::string>{"checkpoint.xgrad", "log.csv"});
    const std::string log = read_file(whole.file("log.csv"));
    CHECK(std::count(log.begin(), log.end(), '\n') == 11);  // a header and one row per step, from one rank

    // 4 steps, then a resume to 10: the same bits as in one go.
    REQUIRE(launch(2, {"--out", interrupted.path().string(), "--steps", "4"}, logs).code == 0);
    fs::copy(interrupted.file("checkpoint.xgrad"), other_count.file("checkpoint.xgrad"));
    job = launch(2, {"--out", interrupted.path().string(), "--steps", "10", "--resume"}, logs);
    REQUIRE(job.code == 0);
    const xgrad::Archive expected = xgrad::read_archive(whole.file("checkpoint.xgrad"));
    CHECK(max_relative_difference(xgrad::read_archive(interrupted.file("checkpoint.xgrad")), expected) == 0);
    CHECK(read_file(interrupted.file("log.csv")) == log);

    // The 4-step checkpoint of 2 ranks resumed by one process (a plain
    // launch): the same steps up to summation order, and it says so.
    job = launch(0, {"--out", other_count.path().string(), "--steps", "10", "--resume"}, logs);
    REQUIRE(job.code == 0);
    CHECK(contains(job.err, "resuming a run of 2 ranks on 1"));
    const double difference = max_relative_difference(xgrad::read_archive(other_count.file("checkpoint.xgrad")), expected);
    CHECK(difference <= 1e-5);
}

// mnist_gan itself under mpirun (meson passes XGRAD_MNIST_GAN).
TEST_CASE("mpirun -np 2 mnist_gan trains what one process trains; rank 0 alone writes and prints") {
    const test::TempDir data, one, two, logs;
    test::write_random_split(data.path(), "train", 64);
    const std::vector<std::string> args{"--preset", "reference", "--batch", "16", "--hidden",     "32",
                                        "--z-dim",  "10",        "--steps", "10", "--grid-every", "5"};
    Job job = mnist_gan(0, data.path(), one.path(), args, logs);
    CAPTURE(job.err);
    REQUIRE(job.code == 0);
    job = mnist_gan(2, data.path(), two.path(), args, logs);
    REQUIRE(job.code == 0);
    CHECK(occurrences(job.err, "data-parallel over 2 ranks: 8 samples of each batch per rank") == 1);
    CHECK(occurrences(job.err, "done: 10 steps") == 1);
    CHECK(file_names(two.path()) == file_names(one.path()));
    // Parameters, Adam moments and the logged losses (the checkpoint's history).
    const double difference = max_relative_difference(xgrad::read_archive(two.file("checkpoint.xgrad")),
                                                      xgrad::read_archive(one.file("checkpoint.xgrad")));
    std::printf("mnist_gan, 2 ranks vs 1 process after 10 steps: largest relative difference %.3g\n", difference);
    CHECK(difference <= 1e-5);

    // Augmented: each rank's rows get the draws one process gives them, and the streams stay equal.
    std::vector<std::string> augmented = args;
    augmented.insert(augmented.end(), {"--augment", "translation,cutout,color", "--augment-p", "0.7"});
    const test::TempDir one_augmented, two_augmented;
    REQUIRE(mnist_gan(0, data.path(), one_augmented.path(), augmented, logs).code == 0);
    job = mnist_gan(2, data.path(), two_augmented.path(), augmented, logs);
    REQUIRE(job.code == 0);
    const xgrad::Archive a = xgrad::read_archive(two_augmented.file("checkpoint.xgrad"));
    const xgrad::Archive b = xgrad::read_archive(one_augmented.file("checkpoint.xgrad"));
    const double augmented_difference = max_relative_difference(a, b);
    std::printf("mnist_gan --augment, 2 ranks vs 1 process after 10 steps: largest relative difference %.3g\n",
                augmented_difference);
    CHECK(augmented_difference <= 5e-5);  // measured 9.9e-6: more rows differ in summation order
    CHECK(a.text("augment_rng") == b.text("augment_rng"));
    CHECK(max_relative_difference(b, xgrad::read_archive(one.file("checkpoint.xgrad"))) > 1e-3);  // it did augment
}

TEST_CASE("mpirun -np 2 mnist_gan --minutes: rank 0's clock stops every rank after the same step") {
    const test::TempDir data, out, logs;
    test::write_random_split(data.path(), "train", 64);
    // A rank stopping alone would leave the other waiting in its next
    // allreduce: the job would hang until the timeout (exit 124).
    const Job job = mnist_gan(2, data.path(), out.path(),
                              {"--preset", "reference", "--batch", "16", "--hidden", "32", "--z-dim", "10", "--steps", "100000",
                               "--grid-every", "0", "--checkpoint-every", "0", "--minutes", "0.005"},
                              logs);
    CAPTURE(job.err);
    REQUIRE(job.code == 0);
    const long steps = xgrad::read_archive(out.file("checkpoint.xgrad")).integer("steps");
    std::printf("mpirun -np 2 mnist_gan --minutes 0.005: %ld steps, the job took %.1f s\n", steps, job.seconds);
    CHECK(steps > 1);
    CHECK(steps < 100000);
    CHECK(occurrences(job.err, "done: " + std::to_string(steps) + " steps (stopped by --minutes)") == 1);
}

TEST_CASE("mpirun mnist_gan refuses a batch that the ranks do not divide, naming the option and both numbers") {
    const test::TempDir data, out, logs;
    test::write_random_split(data.path(), "train", 64);
    const Job job = mnist_gan(3, data.path(), out.path(), {"--preset", "reference", "--batch", "16", "--steps", "2"}, logs);
    CAPTURE(job.err);
    CHECK(job.code == 1);
    CHECK(contains(job.err, "--batch: a global batch of 16 samples cannot be split evenly across 3 ranks"));
}

TEST_CASE("mnist_gan resumes under mpirun bit-exactly, batch norm statistics included, and on another rank count") {
    const test::TempDir data, whole, resumed, other_count, logs;
    test::write_random_split(data.path(), "train", 64);
    const std::vector<std::string> args{"--preset", "dcgan", "--batch", "8", "--checkpoint-every", "3", "--grid-every", "2"};
    const auto with = [&](std::vector<std::string> a, std::vector<std::string> extra) {
        a.insert(a.end(), extra.begin(), extra.end());
        return a;
    };
    Job job = mnist_gan(2, data.path(), whole.path(), with(args, {"--steps", "6"}), logs);
    CAPTURE(job.err);
    REQUIRE(job.code == 0);
    REQUIRE(mnist_gan(2, data.path(), resumed.path(), with(args, {"--steps", "3"}), logs).code == 0);
    fs::copy(resumed.file("checkpoint.xgrad"), other_count.file("checkpoint.xgrad"));
    job = mnist_gan(2, data.path(), resumed.path(), with(args, {"--steps", "6", "--resume"}), logs);
    REQUIRE(job.code == 0);
    const xgrad::Archive expected = xgrad::read_archive(whole.file("checkpoint.xgrad"));
    CHECK(max_relative_difference(xgrad::read_archive(resumed.file("checkpoint.xgrad")), expected) == 0);
    CHECK(read_file(resumed.file("log.csv")) == read_file(whole.file("log.csv")));

    job = mnist_gan(0, data.path(), other_count.path(), with(args, {"--steps", "6", "--resume"}), logs);
    REQUIRE(job.code == 0);
    CHECK(contains(job.err, "the checkpoint was written by 2 ranks, this run has 1"));
    // Batch norm sees 4 samples per rank instead of 8: not the same training, but a sound one.
    CHECK(std::isfinite(max_relative_difference(xgrad::read_archive(other_count.file("checkpoint.xgrad")), expected)));
}

TEST_CASE("mpirun mnist_gan with one flag different on one rank: every rank fails naming it and both values, within seconds") {
    const test::TempDir data, other_data, out, logs;
    test::write_random_split(data.path(), "train", 64);
    test::write_random_split(other_data.path(), "train", 64, 2);
    struct Difference {
        std::string option, rank0, rank1;  // the option and its value on each rank
        std::string shown0, shown1;        // the start of each value as the message shows it
    };
    const std::string images = "64 images of 28 x 28 pixels, CRC-32 ";
    const std::vector<Difference> differences = {
        // hung: the statistics average ran on each rank's own schedule
        {"--steps", "150", "120", "150", "120"},
        {"--checkpoint-every", "50", "40", "50", "40"},
        {"--grid-every", "50", "40", "50", "40"},
        // corrupted the heap: allreduces of different sizes paired up
        {"--k", "1", "2", "1", "2"},
        {"--batch", "16", "32", "16", "32"},
        {"--seed", "1", "2", "1", "2"},
        {"--g-loss", "non-saturating", "minimax", "non-saturating", "minimax"},
        {"--loss", "bce", "hinge", "bce", "hinge"},
        {"--augment", "translation", "cutout", "translation", "cutout"},
        {"--lr", "0.001", "0.002", "0.00100000005", "0.00200000009"},
        {"--data", data.path().string(), other_data.path().string(), images, images},
        // rank 1's budget would be ignored (rank 0's clock decides); given on one rank only, the job hung
        {"--minutes", "10", "20", "10", "20"},
    };
    for (const Difference& d : differences) {
        CAPTURE(d.option);
        std::vector<std::string> args[2];
        for (int rank = 0; rank < 2; ++rank) {
            args[rank] = {"--preset", "reference", "--batch", "16",     "--hidden",           "32",    "--z-dim",
                          "10",       "--steps",   "150",     "--data", data.path().string(), "--out", out.path().string()};
            const std::string& value = rank == 0 ? d.rank0 : d.rank1;
            const auto given = std::find(args[rank].begin(), args[rank].end(), d.option);
            if (given != args[rank].end()) {
                given[1] = value;
            } else {
                args[rank].insert(args[rank].end(), {d.option, value});
            }
        }
        const Job job = launch_two("XGRAD_MNIST_GAN", args, logs);
        CAPTURE(job.err);
        std::printf("mpirun mnist_gan with %s %s and %s: exit code %d after %.1f s\n", d.option.c_str(), d.rank0.c_str(),
                    d.rank1.c_str(), job.code, job.seconds);
        CHECK(job.code == 1);
        CHECK(job.seconds < 30);
        const std::string shown = d.option == "--data" ? "--data (training images)" : d.option;
        const std::string message = "the ranks must run with the same settings: " + shown + " is " + d.shown1;
        CHECK(contains(job.err, "xgrad: rank 0 of 2: error: " + message));
        CHECK(contains(job.err, "xgrad: rank 1 of 2: error: " + message));
        CHECK(contains(job.err, " on rank 1 but " + d.shown0));
    }
}
