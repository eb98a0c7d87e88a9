// The apps as a crashing machine and a hostile user meet them, run as real
// processes: SIGKILL at random moments, a full and a read-only disk, Ctrl-C
// while samples are written, outputs checked before long work, memory that
// must not grow with --samples. meson passes the executables' paths in
// XGRAD_MNIST_GAN, XGRAD_MNIST_CLASSIFIER and XGRAD_GAN_EVAL.
#include <doctest/doctest.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "app_helpers.hpp"
#include "classifier.hpp"
#include "helpers.hpp"
#include "presets.hpp"

extern char** environ;

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

std::string executable(const char* variable) {
    const char* path = std::getenv(variable);
    if (!path || !fs::exists(path)) {
        throw std::runtime_error(std::string(variable) + " does not name an executable: run this test through meson test");
    }
    return path;
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// One app run as a child process, its output in files.
class Child {
public:
    // `env` entries (NAME=value) are added to this process's environment.
    Child(const std::string& program, const std::vector<std::string>& args, const fs::path& logs,
          const std::vector<std::string>& env = {}, const std::string& stdout_path = "")
        : stderr_path_(logs / "stderr"), stdout_path_(stdout_path.empty() ? (logs / "stdout").string() : stdout_path) {
        std::vector<std::string> argv_strings{program};
        argv_strings.insert(argv_strings.end(), args.begin(), args.end());
        std::vector<char*> argv;
        for (auto& a : argv_strings) argv.push_back(a.data());
        argv.push_back(nullptr);
        std::vector<std::string> env_strings;
        for (char** e = environ; *e; ++e) env_strings.emplace_back(*e);
        env_strings.insert(env_strings.end(), env.begin(), env.end());
        std::vector<char*> envp;
        for (auto& e : env_strings) envp.push_back(e.data());
        envp.push_back(nullptr);

        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
        posix_spawn_file_actions_addopen(&actions, 1, stdout_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        posix_spawn_file_actions_addopen(&actions, 2, stderr_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        const int error = posix_spawn(&pid_, program.c_str(), &actions, nullptr, argv.data(), envp.data());
        posix_spawn_file_actions_destroy(&actions);
        if (error != 0) throw std::runtime_error("cannot start " + program + ": " + std::strerror(error));
    }
    ~Child() {
        if (pid_ > 0) {
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, nullptr, 0);
        }
    }
    Child(const Child&) = delete;
    Child& operator=(const Child&) = delete;

    // The exit status (WIFEXITED...) once the child ended; -1 if it still
    // runs after `limit` (it is then killed, and the check fails).
    int wait(std::chrono::milliseconds limit = 60s) {
        const auto deadline = Clock::now() + limit;
        while (pid_ > 0) {
            int status = 0;
            const pid_t done = ::wait4(pid_, &status, WNOHANG, &usage_);
            if (done == pid_) {
                pid_ = -1;
                return status;
            }
            if (Clock::now() > deadline) {
                FAIL_CHECK("the child still ran after " << limit.count() << " ms; stderr: " << err());
                return -1;
            }
            std::this_thread::sleep_for(2ms);
        }
        return -1;
    }
    // The exit code, or 128 + the signal that ended it.
    int exit_code(std::chrono::milliseconds limit = 60s) {
        const int status = wait(limit);
        if (status < 0) return -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    bool running() const { return pid_ > 0 && ::waitpid(pid_, nullptr, WNOHANG) == 0; }
    void signal(int number) const { ::kill(pid_, number); }
    // True once stderr contains `text`; false after `limit`.
    bool await_stderr(const std::string& text, std::chrono::milliseconds limit) const {
        const auto deadline = Clock::now() + limit;
        while (Clock::now() < deadline) {
            if (contains(err(), text)) return true;
            std::this_thread::sleep_for(2ms);
        }
        return false;
    }
    std::string err() const { return test::file_bytes(stderr_path_); }
    std::string out() const { return test::file_bytes(stdout_path_); }
    long peak_rss_kib() const { return usage_.ru_maxrss; }

private:
    fs::path stderr_path_;
    std::string stdout_path_;
    pid_t pid_ = -1;
    struct rusage usage_ {};
};

// The configuration of tiny_run, for gan::verify_checkpoint.
gan::GanConfig tiny_config() {
    gan::GanConfig c = gan::mlp_preset();
    c.batch = 8;
    c.hidden = 16;
    c.z_dim = 10;
    return c;
}

std::vector<std::string> tiny_run(const fs::path& data, const fs::path& out, long steps, std::vector<std::string> extra = {}) {
    std::vector<std::string> args{"--data",   data.string(), "--out",       out.string(), "--steps",  std::to_string(steps),
                                  "--preset", "mlp",         "--batch",     "8",          "--hidden", "16",
                                  "--z-dim",  "10",          "--log-every", "1"};
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
}

std::vector<std::string> temporary_files(const fs::path& dir) {
    std::vector<std::string> found;
    for (const auto& entry : fs::directory_iterator(dir)) {
        if (entry.path().extension() == ".tmp") found.push_back(entry.path().filename().string());
    }
    return found;
}

// log.csv holds the header and exactly one row per step 1..steps, in order.
void check_log_rows(const fs::path& log, long steps) {
    const std::vector<std::string> lines = test::lines_of(log);
    REQUIRE(lines.size() == static_cast<std::size_t>(steps) + 1);
    CHECK(lines[0] == "step,d_loss,g_loss,d_real,d_fake");
    std::size_t wrong = 0;
    for (long step = 1; step <= steps; ++step) {
        wrong += lines[static_cast<std::size_t>(step)].rfind(std::to_string(step) + ",", 0) != 0;
    }
    CHECK(wrong == 0);
}

// mnist_classifier (data in `data`) stops at once, before its first epoch,
// with `why` about an unusable --out.
void check_classifier_refuses_out(const fs::path& data, const fs::path& out, const std::string& why) {
    Child classifier(executable("XGRAD_MNIST_CLASSIFIER"), {"--data", data.string(), "--out", out.string(), "--epochs", "1000"},
                     data);
    CHECK(classifier.exit_code(10s) == 1);
    CHECK(contains(classifier.err(), "--out '" + out.string() + "': " + why));
    CHECK_FALSE(contains(classifier.err(), "epoch 1/"));
}

}  // namespace

TEST_CASE("SIGKILLed at random moments, mnist_gan always leaves a loadable checkpoint and resumes cleanly") {
    const std::string mnist_gan = executable("XGRAD_MNIST_GAN");
    test::TempDir dir;
    test::write_random_split(dir.path(), "train", 30);
    const fs::path out = dir.path() / "out", checkpoint = out / "checkpoint.xgrad";
    const auto args = tiny_run(dir.path(), out, 1000000, {"--checkpoint-every", "1", "--grid-every", "3"});

    std::mt19937 rng(20240601);  // fixed delays; where they land still varies from run to run
    constexpr int kKills = 12;
    long steps = 0;
    int killed_running = 0, left_temporary = 0;
    for (int kill = 0; kill < kKills; ++kill) {
        CAPTURE(kill);
        std::vector<std::string> run_args = args;
        if (fs::exists(checkpoint)) run_args.push_back("--resume");
        Child child(mnist_gan, run_args, dir.path());
        if (kill % 2 == 0) {
            // Every other kill only once training has begun, so the run makes
            // progress however slow its start-up (under ASan on a busy machine
            // all 12 once landed before the first step); the others may land
            // in start-up or in a resume.
            REQUIRE(child.await_stderr("mnist_gan: 30 training images", 20s));
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 150));
        if (!child.running()) FAIL("mnist_gan ended before the kill: " << child.err());
        child.signal(SIGKILL);
        killed_running += child.exit_code() == 128 + SIGKILL;
        left_temporary += !temporary_files(out).empty();
        if (!fs::exists(checkpoint)) continue;
        long now = -1;
        CHECK_NOTHROW(now = gan::verify_checkpoint(checkpoint.string(), tiny_config()));
        CHECK(now >= steps);  // a checkpoint is never lost or replaced by an older one
        steps = std::max(steps, now);
    }
    CHECK(killed_running == kKills);
    MESSAGE(kKills << " kills, the last checkpoint at step " << steps << "; " << left_temporary
                   << " kills left a temporary file");
    REQUIRE(steps > 0);

    Child last(mnist_gan, tiny_run(dir.path(), out, steps + 3, {"--checkpoint-every", "1", "--grid-every", "3", "--resume"}),
               dir.path());
    REQUIRE_MESSAGE(last.exit_code() == 0, last.err());
    CHECK(gan::verify_checkpoint(checkpoint.string(), tiny_config()) == steps + 3);
    CHECK(temporary_files(out).empty());
    check_log_rows(out / "log.csv", steps + 3);
}

TEST_CASE("log.csv after a kill and a resume is the uninterrupted run's, the interval the kill cut included") {
    const std::string mnist_gan = executable("XGRAD_MNIST_GAN");
    test::TempDir dir;
    test::write_random_split(dir.path(), "train", 30);
    const fs::path cut = dir.path() / "cut", whole = dir.path() / "whole";
    // Rows every 7 steps, a checkpoint after every step: a kill most often cuts an interval.
    const auto args = [&](const fs::path& out, long steps, bool resume) {
        auto a = test::tiny_run(dir.path(), out, steps);
        a.insert(a.end(), {"--log-every", "7", "--checkpoint-every", "1", "--grid-every", "0"});
        if (resume) a.push_back("--resume");
        return a;
    };
    Child killed(mnist_gan, args(cut, 1000000, false), dir.path());
    REQUIRE(killed.await_stderr("mnist_gan: 30 training images", 20s));
    std::this_thread::sleep_for(300ms);
    REQUIRE_MESSAGE(killed.running(), killed.err());
    killed.signal(SIGKILL);
    CHECK(killed.exit_code() == 128 + SIGKILL);
    const long steps = gan::verify_checkpoint((cut / "checkpoint.xgrad").string(), tiny_config());
    const std::string where = steps % 7 == 0 ? " (an interval's end)" : ", mid-interval";
    MESSAGE("killed after the checkpoint of step " << steps << where);

    Child resumed(mnist_gan, args(cut, steps + 10, true), dir.path());
    REQUIRE_MESSAGE(resumed.exit_code() == 0, resumed.err());
    Child uninterrupted(mnist_gan, args(whole, steps + 10, false), dir.path());
    REQUIRE_MESSAGE(uninterrupted.exit_code() == 0, uninterrupted.err());
    CHECK(test::file_bytes(cut / "log.csv") == test::file_bytes(whole / "log.csv"));
}

namespace {

// A small tmpfs of its own, unmounted at the end.
class SmallDisk {
public:
    SmallDisk(const fs::path& where, const char* size) : path_(where) {
        fs::create_directories(where);
        if (::mount("tmpfs", where.c_str(), "tmpfs", 0, size) != 0) error_ = std::strerror(errno);
    }
    ~SmallDisk() {
        if (error_.empty()) ::umount2(path_.c_str(), MNT_DETACH);
    }
    SmallDisk(const SmallDisk&) = delete;
    SmallDisk& operator=(const SmallDisk&) = delete;
    // Empty when mounted.
    const std::string& error() const { return error_; }
    bool make_read_only(const char* size) { return ::mount("tmpfs", path_.c_str(), "tmpfs", MS_REMOUNT | MS_RDONLY, size) == 0; }

private:
    fs::path path_;
    std::string error_;
};

}  // namespace

TEST_CASE("on a full disk mnist_gan stops naming the file and keeps its checkpoint; on a read-only one the apps stop at once") {
    if (::geteuid() != 0) {
        MESSAGE("skipped: mounting a small tmpfs needs root");
        return;
    }
    test::TempDir dir;
    test::write_random_split(dir.path(), "train", 30);
    test::write_random_split(dir.path(), "t10k", 20, 2);
    const char* size = "size=1m";
    SmallDisk disk(dir.path() / "disk", size);
    if (!disk.error().empty()) {
        MESSAGE("skipped: cannot mount a tmpfs: " << disk.error());
        return;
    }
    const std::string mnist_gan = executable("XGRAD_MNIST_GAN");
    const fs::path out = dir.path() / "disk" / "out", checkpoint = out / "checkpoint.xgrad";

    // A checkpoint is ~310 KB, a grid ~50 KB: 1 MB fills within a few steps.
    Child full(mnist_gan, tiny_run(dir.path(), out, 1000000, {"--checkpoint-every", "1", "--grid-every", "1"}), dir.path());
    CHECK(full.exit_code() == 1);
    const std::string err = full.err();
    INFO(err);
    CHECK(contains(err, "No space left on device"));
    CHECK(contains(err, "cannot write '" + out.string() + "/"));
    const long steps = gan::verify_checkpoint(checkpoint.string(), tiny_config());
    CHECK(steps > 0);
    CHECK(temporary_files(out).empty());

    // With space freed, the run resumes and finishes.
    for (const auto& entry : fs::directory_iterator(out)) {
        if (entry.path().extension() == ".png") fs::remove(entry.path());
    }
    Child resumed(mnist_gan, tiny_run(dir.path(), out, steps + 2, {"--checkpoint-every", "1", "--grid-every", "0", "--resume"}),
                  dir.path());
    REQUIRE_MESSAGE(resumed.exit_code() == 0, resumed.err());
    check_log_rows(out / "log.csv", steps + 2);

    REQUIRE(disk.make_read_only(size));
    Child again(mnist_gan, tiny_run(dir.path(), out, steps + 4, {"--resume"}), dir.path());
    CHECK(again.exit_code() == 1);
    CHECK(contains(again.err(), "--out '" + out.string() + "': cannot create files there: Read-only file system"));
    CHECK(gan::verify_checkpoint(checkpoint.string(), tiny_config()) == steps + 2);

    check_classifier_refuses_out(dir.path(), dir.path() / "disk" / "classifier",
                                 "cannot create the directory: Read-only file system");
}

TEST_CASE("Ctrl-C while samples are written: exit 130, the checkpoint kept, no samples.idx or temporary file") {
    const std::string mnist_gan = executable("XGRAD_MNIST_GAN");
    test::TempDir dir;
    test::write_random_split(dir.path(), "train", 30);
    const fs::path out = dir.path() / "out";
    // 3 million samples are 2.4 GB: far more than can be written before the signal.
    Child child(mnist_gan, tiny_run(dir.path(), out, 2, {"--grid-every", "0", "--samples", "3000000"}), dir.path());
    REQUIRE_MESSAGE(child.await_stderr("writing 3000000 samples to " + (out / "samples.idx").string(), 20s), child.err());
    std::this_thread::sleep_for(50ms);
    child.signal(SIGINT);
    CHECK(child.exit_code(10s) == 130);
    INFO(child.err());
    CHECK(contains(child.err(), "interrupted after training (step 2"));
    CHECK_FALSE(fs::exists(out / "samples.idx"));
    CHECK(temporary_files(out).empty());
    CHECK(gan::verify_checkpoint((out / "checkpoint.xgrad").string(), tiny_config()) == 2);
}

TEST_CASE("mnist_gan --samples streams: its peak memory does not grow with the sample count") {
    const std::string mnist_gan = executable("XGRAD_MNIST_GAN");
    test::TempDir dir;
    test::write_random_split(dir.path(), "train", 30);
    // Under AddressSanitizer freed memory stays resident in its quarantine.
    const std::string asan = std::getenv("ASAN_OPTIONS") ? std::getenv("ASAN_OPTIONS") : "";
    const std::vector<std::string> env{"ASAN_OPTIONS=" + asan + (asan.empty() ? "" : ":") + "quarantine_size_mb=1"};
    long peak_kib[2];
    const std::size_t counts[2] = {1000, 61000};  // 0.8 MB and 48 MB of pixels
    for (int i = 0; i < 2; ++i) {
        const fs::path out = dir.path() / ("out" + std::to_string(i));
        Child child(mnist_gan, tiny_run(dir.path(), out, 1, {"--grid-every", "0", "--samples", std::to_string(counts[i])}),
                    dir.path(), env);
        REQUIRE_MESSAGE(child.exit_code() == 0, child.err());
        CHECK(xgrad::read_idx_images((out / "samples.idx").string()).count == counts[i]);
        peak_kib[i] = child.peak_rss_kib();
    }
    INFO("peak RSS " << peak_kib[0] << " KiB for " << counts[0] << " samples, " << peak_kib[1] << " KiB for " << counts[1]);
    CHECK(peak_kib[1] - peak_kib[0] < 16 * 1024);
}

TEST_CASE("mnist_classifier and gan_eval check their outputs before the work, and fail naming what is wrong") {
    test::TempDir dir;
    test::write_random_split(dir.path(), "train", 30);
    test::write_random_split(dir.path(), "t10k", 20, 2);
    std::ofstream(dir.path() / "a-file") << "not a directory";

    check_classifier_refuses_out(dir.path(), dir.path() / "a-file" / "out", "cannot create the directory: Not a directory");

    quality::ClassifierConfig config;
    config.hidden = 8;
    const std::string weights = (dir.path() / "classifier.xgrad").string();
    quality::Classifier(config, 1).save(weights);
    const std::string gan_eval = executable("XGRAD_GAN_EVAL");
    const std::vector<std::string> baseline{
        "--data", dir.path().string(), "--classifier", weights, "--baseline", "noise", "--count", "10"};

    const std::string bad_csv = (dir.path() / "a-file" / "metrics.csv").string();
    std::vector<std::string> csv_args = baseline;
    csv_args.insert(csv_args.end(), {"--csv", bad_csv});
    Child csv(gan_eval, csv_args, dir.path());
    CHECK(csv.exit_code() == 1);
    CHECK(contains(csv.err(), "--csv: cannot open '" + bad_csv + "' for writing: Not a directory"));
    CHECK_FALSE(contains(csv.out(), "classifier score"));  // refused before the work

    Child full_stdout(gan_eval, baseline, dir.path(), {}, "/dev/full");
    CHECK(full_stdout.exit_code() == 1);
    CHECK(contains(full_stdout.err(), "cannot write to standard output: No space left on device"));

    std::vector<std::string> huge = baseline;
    huge.back() = "10000000";
    const double needed = 1e7 * (784 + 8 + 10) * 4.0,
                 physical = double(::sysconf(_SC_PHYS_PAGES)) * double(::sysconf(_SC_PAGESIZE));
    if (needed <= physical) {
        MESSAGE("skipped the --count 10000000 check: this machine has the memory for it");
    } else {
        Child count(gan_eval, huge, dir.path());
        CHECK(count.exit_code() == 1);
        INFO(count.err());
        CHECK(contains(count.err(), "--count 10000000: scoring 10000000 images takes 29.9 GiB"));
    }
}

TEST_CASE("mnist_classifier removes the temporary file a killed run left, on start, and nothing else") {
    test::TempDir dir;
    test::write_random_split(dir.path(), "train", 30);  // no t10k split: the run fails after the start
    const fs::path out = dir.path() / "out";
    fs::create_directories(out);
    std::ofstream(out / "classifier.xgrad.tmp") << "partial";
    std::ofstream(out / "notes.tmp") << "the user's";
    Child classifier(executable("XGRAD_MNIST_CLASSIFIER"), {"--data", dir.path().string(), "--out", out.string()}, dir.path());
    CHECK(classifier.exit_code() == 1);
    INFO(classifier.err());
    CHECK_FALSE(fs::exists(out / "classifier.xgrad.tmp"));
    CHECK(fs::exists(out / "notes.tmp"));
    CHECK(contains(classifier.err(), "removed " + (out / "classifier.xgrad.tmp").string()));
}
