// xgrad_distributed inside an MPI job. Meson runs this file under
// `mpirun -np 2` and `-np 3` when MPI is found, and as one plain process
// always; every case holds for any number of ranks. Every rank runs the
// cases in the same order, so their collectives match; checks are CHECKs,
// not REQUIREs, so that a failing rank still takes part in the collectives
// that follow (a rank leaving a case early would leave the others waiting,
// until meson's timeout).
#include <doctest/doctest.h>

#include <algorithm>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <streambuf>
#include <string>
#include <vector>

#include <xgrad.hpp>
#include <xgrad/distributed.hpp>

#include "alloc_counter.hpp"
#include "data_parallel_mlp.hpp"
#include "gan.hpp"
#include "presets.hpp"
#include "relative_difference.hpp"

using xgrad::Distributed;
using xgrad::DistributedError;
using xgrad::DistributedSampler;
using xgrad::GradientAllreduce;
using xgrad::ReduceOrder;
using xgrad::Tensor;
using xgrad::Var;

namespace {

// Prefixes every line written through it with "[rank R] ": the other ranks'
// doctest reports stay readable, and their summary lines do not count twice
// in scripts/test.sh's total (which counts lines starting with "[doctest]").
class PrefixedLines : public std::streambuf {
public:
    PrefixedLines(std::streambuf* out, std::string prefix) : out_(out), prefix_(std::move(prefix)) {}

private:
    int overflow(int c) override {
        if (c == traits_type::eof()) return traits_type::not_eof(c);
        if (at_line_start_) out_->sputn(prefix_.data(), static_cast<std::streamsize>(prefix_.size()));
        at_line_start_ = c == '\n';
        return out_->sputc(static_cast<char>(c));
    }
    int sync() override { return out_->pubsync(); }

    std::streambuf* out_;
    std::string prefix_;
    bool at_line_start_ = true;
};

// The process's one Distributed (MPI starts once per process), made by the
// first case that needs it and finalised at exit.
const Distributed& world() {
    static Distributed distributed;
    static PrefixedLines prefixed(std::cout.rdbuf(), "[rank " + std::to_string(distributed.rank()) + "] ");
    static const bool redirected = [] {
        if (distributed.rank() > 0) std::cout.rdbuf(&prefixed);
        return true;
    }();
    (void)redirected;
    return distributed;
}

// Parameters of the given sizes, each gradient filled with
// (rank + 1) * ((j + i) % 11 + 1) for element j of parameter i.
std::vector<Var> parameters_with_gradients(const std::vector<std::size_t>& sizes, int rank) {
    std::vector<Var> parameters;
    for (std::size_t i = 0; i < sizes.size(); ++i) {
        Var p(Tensor({sizes[i]}, 0.f), true);
        Tensor& g = p.mutable_grad();
        for (std::size_t j = 0; j < g.size(); ++j) g(j) = static_cast<float>((rank + 1) * static_cast<int>((j + i) % 11 + 1));
        parameters.push_back(p);
    }
    return parameters;
}

bool bitwise_equal(const std::vector<Var>& a, const std::vector<Var>& b) {
    for (std::size_t i = 0; i < a.size(); ++i) {
        if (std::memcmp(a[i].value().data(), b[i].value().data(), a[i].numel() * sizeof(float)) != 0) return false;
    }
    return true;
}

std::string name(ReduceOrder order) { return order == ReduceOrder::mpi ? "mpi" : "rank_order"; }

}  // namespace

TEST_CASE("GradientAllreduce averages odd-sized gradients (1, 7, 1000003 floats) in one message and skips frozen ones") {
    const Distributed& w = world();
    const int n = w.size();
    for (ReduceOrder order : {ReduceOrder::mpi, ReduceOrder::rank_order}) {
        CAPTURE(name(order));
        std::vector<Var> parameters = parameters_with_gradients({1, 7, 5, 1000003}, w.rank());
        // Parameter 2 is frozen: its gradient (rank-specific) is neither sent nor changed.
        parameters[2].set_requires_grad(false);
        GradientAllreduce reduce(w, parameters, order);
        CHECK_FALSE(reduce.average());
        CHECK(reduce.last_count() == (n > 1 ? 1 + 7 + 1000003 + 1 : 0));  // + the flag
        // The mean over ranks of (rank + 1) * v is (n + 1) / 2 * v.
        double worst = 0;
        for (std::size_t i : {0, 1, 3}) {
            const Tensor& g = parameters[i].grad();
            for (std::size_t j = 0; j < g.size(); ++j) {
                const double expected = (n + 1) / 2.0 * double((j + i) % 11 + 1);
                worst = std::max(worst, std::fabs(double(g(j)) - expected) / expected);
            }
        }
        CHECK(worst <= 1e-7);
        const Tensor& frozen = parameters[2].grad();
        for (std::size_t j = 0; j < frozen.size(); ++j) CHECK(frozen(j) == float((w.rank() + 1) * int((j + 2) % 11 + 1)));
    }
}

TEST_CASE("GradientAllreduce: a flag raised on one rank comes back true on every rank") {
    const Distributed& w = world();
    std::vector<Var> parameters = parameters_with_gradients({3}, w.rank());
    GradientAllreduce reduce(w, parameters, ReduceOrder::rank_order);
    CHECK(reduce.average(w.rank() == w.size() - 1));
    CHECK_FALSE(reduce.average(false));
    CHECK(w.any(w.rank() == 0));
    CHECK_FALSE(w.any(false));
    double values[2] = {1.0, double(w.rank())};
    w.sum(values, 2);
    CHECK(values[0] == w.size());
    CHECK(values[1] == w.size() * (w.size() - 1) / 2);
}

TEST_CASE("GradientAllreduce: extra values travel with the gradients and come back summed over the ranks") {
    const Distributed& w = world();
    std::vector<Var> parameters = parameters_with_gradients({5, 2}, w.rank());
    for (ReduceOrder order : {ReduceOrder::rank_order, ReduceOrder::mpi}) {
        CAPTURE(name(order));
        GradientAllreduce reduce(w, parameters, order, 3);
        float sums[3] = {1.f, float(w.rank()), 0.5f};
        CHECK_FALSE(reduce.average(false, sums, 3));
        CHECK(sums[0] == float(w.size()));
        CHECK(sums[1] == float(w.size() * (w.size() - 1) / 2));
        CHECK(sums[2] == 0.5f * float(w.size()));
        float one[1] = {2.f};
        CHECK(reduce.average(w.is_root(), one, 1));  // fewer than room was made for
        CHECK(one[0] == 2.f * float(w.size()));
        float four[4] = {};
        CHECK_THROWS_WITH_AS(reduce.average(false, four, 4), doctest::Contains("4 extra values, but room for 3"),
                             std::invalid_argument);
    }
}

TEST_CASE("mnist_gan's step, distributed or not, allocates nothing after warm-up: every preset, gradient penalties too") {
    struct UniformImages : gan::DataSource {
        std::size_t dim() const override { return 784; }
        void sample(Tensor& batch, xgrad::Rng& rng) override { rng.fill_uniform(batch, 0.f, 1.f); }
        void sample_labelled(Tensor& batch, Tensor& classes, xgrad::Rng& rng) override {
            sample(batch, rng);
            std::fill(classes.begin(), classes.end(), 0.f);
            for (std::size_t i = 0; i < batch.shape()[0]; ++i) classes(i, rng.below(classes.shape()[1])) = 1.f;
        }
    } data;
    gan::GanConfig dcgan = gan::dcgan_preset();  // convolutions, batch norm, the averaged generator
    dcgan.channels = 4;
    // Steps with and without R1 alternate: they make different numbers of
    // graph nodes, so recycled nodes meet other ops than the step before.
    gan::GanConfig lazy_r1 = dcgan;
    lazy_r1.r1_gamma = 0.01f;
    lazy_r1.r1_every = 2;
    gan::GanConfig wgan_gp = gan::wgan_gp_preset();  // a gradient penalty in every critic update
    wgan_gp.channels = 4;
    gan::GanConfig cdcgan = gan::cdcgan_preset();  // the classes' inputs and D's projection
    cdcgan.channels = 4;
    cdcgan.r1_every = 2;
    gan::GanConfig augmented = lazy_r1;  // every D input augmented, in both phases
    augmented.augment = xgrad::parse_augment_policy("translation,cutout,color");
    for (gan::GanConfig config : {gan::reference_preset(), dcgan, lazy_r1, wgan_gp, cdcgan, augmented}) {
        CAPTURE(config.preset);
        CAPTURE(config.r1_gamma);
        CAPTURE(xgrad::augment_policy_text(config.augment));
        config.batch = 12;  // split evenly across 1, 2 or 3 ranks
        gan::Gan gan(config, 5);
        gan.distribute(world());
        for (int i = 0; i < 10; ++i) gan.step(data);
        // Over several ranks, OpenMPI may allocate for a message that arrives
        // before its receive is posted, which depends on timing. An
        // allocation of xgrad's happens in every window of steps; so, with
        // more than one rank, the fewest of three windows counts.
        const int windows = world().size() > 1 ? 3 : 1;
        long allocations = -1;
        for (int w = 0; w < windows; ++w) {
            const long counted = alloc_counter::during([&] {
                for (int i = 0; i < 4; ++i) gan.step(data);
            });
            allocations = w == 0 ? counted : std::min(allocations, counted);
        }
        if (allocations < 0) {
            MESSAGE("allocations are not counted under a sanitizer");
        } else {
            CHECK(allocations == 0);
        }
    }
}

TEST_CASE("GradientAllreduce allocates nothing in steady state (rank order; MPI_Allreduce allocates inside MPI)") {
    const Distributed& w = world();
    for (ReduceOrder order : {ReduceOrder::rank_order, ReduceOrder::mpi}) {
        CAPTURE(name(order));
        std::vector<Var> parameters = parameters_with_gradients({100352, 128, 128, 1}, w.rank());  // the reference GAN's D
        GradientAllreduce reduce(w, parameters, order, 2);
        reduce.average();  // MPI sets up its connections on first use
        float sums[2] = {1.f, 2.f};
        const long allocations = alloc_counter::during([&] {
            for (int i = 0; i < 5; ++i) reduce.average(false, sums, 2);
        });
        // OpenMPI 4.1's MPI_Allreduce mallocs its scratch buffer on every
        // call (5 allocations per call measured on 2 ranks): outside xgrad's
        // control, so only reported. Alltoall and allgather allocate nothing.
        if (allocations < 0) {
            MESSAGE("allocations are not counted under a sanitizer");
        } else if (order == ReduceOrder::rank_order) {
            CHECK(allocations == 0);
        } else if (w.is_root() && w.size() > 1) {
            std::printf("MPI_Allreduce of 100609 floats on %d ranks: %.1f heap allocations per call\n", w.size(),
                        allocations / 5.0);
        }
    }
}

TEST_CASE("GradientAllreduce refuses a parameter replaced by a larger one, before writing past its buffer") {
    const Distributed& w = world();
    Var p(Tensor({std::size_t(3)}, 1.f), true);
    GradientAllreduce reduce(w, {Var(Tensor({std::size_t(2)}, 1.f), true), p});
    p.mutable_value() = Tensor({std::size_t(40)}, 1.f);
    p.mutable_grad() = Tensor({std::size_t(40)}, 1.f);
    if (w.size() == 1) return;  // one process sends nothing
    CHECK_THROWS_WITH_AS(reduce.average(), doctest::Contains("the gradient of parameter 1 is (40), larger than at construction"),
                         std::logic_error);
}

TEST_CASE("GradientAllreduce refuses a parameter that is not a leaf") {
    const Distributed& w = world();
    const Var p(Tensor({3}, 1.f), true);
    CHECK_THROWS_WITH_AS(GradientAllreduce(w, {p, xgrad::exp(p)}), doctest::Contains("parameter 1 is the result of 'exp'"),
                         std::invalid_argument);
}

TEST_CASE("GradientAllreduce checks the message size of every call: ranks that send different sizes fail, not pair up") {
    const Distributed& w = world();
    for (ReduceOrder order : {ReduceOrder::mpi, ReduceOrder::rank_order}) {
        CAPTURE(name(order));
        // The same sizes at construction; the calls differ: each rank freezes
        // a different number of parameters (its own rank), so every rank
        // sends a size of its own.
        std::vector<Var> parameters = parameters_with_gradients({5, 5, 5, 5}, w.rank());
        GradientAllreduce reduce(w, parameters, order, 2);
        CHECK_NOTHROW(reduce.average());
        if (w.size() == 1) continue;
        for (int i = 0; i < w.rank(); ++i) parameters[static_cast<std::size_t>(i)].set_requires_grad(false);
        const int previous = (w.rank() + w.size() - 1) % w.size();
        const std::string message = "xgrad::GradientAllreduce::average: rank " + std::to_string(w.rank()) + " sends " +
                                    std::to_string(5 * (4 - w.rank()) + 1) + " floats, rank " + std::to_string(previous) +
                                    " sends " + std::to_string(5 * (4 - previous) + 1);
        CHECK_THROWS_WITH_AS(reduce.average(), doctest::Contains(message.c_str()), DistributedError);
        // The extra values count too.
        xgrad::set_requires_grad(parameters, true);
        float sums[2] = {1.f, 2.f};
        CHECK_THROWS_AS(reduce.average(false, sums, static_cast<std::size_t>(w.rank() % 3)), DistributedError);
        CHECK_NOTHROW(reduce.average(false, sums, 2));
    }
}

TEST_CASE("check_same_settings: a setting that differs is an error on every rank, naming it and both values") {
    const Distributed& w = world();
    const std::vector<std::pair<std::string, std::string>> same{{"--steps", "150"}, {"--k", "1"}, {"--data", "CRC-32 0badf00d"}};
    CHECK_NOTHROW(w.check_same_settings(same));
    if (w.size() == 1) return;
    // Rank 1 differs in --steps; the last rank (2 of 3) in --k as well.
    std::vector<std::pair<std::string, std::string>> mine = same;
    if (w.rank() >= 1) mine[0].second = "120";
    if (w.rank() == 2) mine[1].second = "2";
    CHECK_THROWS_WITH_AS(
        w.check_same_settings(mine),
        doctest::Contains("the ranks must run with the same settings: --steps is 120 on rank 1 but 150 on rank 0"),
        xgrad::RanksDisagree);
    if (w.size() == 3) {
        CHECK_THROWS_WITH_AS(w.check_same_settings(mine), doctest::Contains("(ranks 1, 2 differ from rank 0)"),
                             xgrad::RanksDisagree);
    }
    // A list of another length or order.
    mine = same;
    if (w.rank() == 1) mine.pop_back();
    CHECK_THROWS_WITH_AS(w.check_same_settings(mine),
                         doctest::Contains("--data is missing on rank 1 but CRC-32 0badf00d on rank 0"), xgrad::RanksDisagree);
    CHECK_NOTHROW(w.check_same_settings(same));
}

TEST_CASE("broadcast gives every rank rank 0's parameters and buffers") {
    const Distributed& w = world();
    xgrad::Rng own(100 + static_cast<std::uint64_t>(w.rank())), rank0(100);
    xgrad::Sequential net, expected;
    net.add<xgrad::Linear>(5, 4, own);
    net.add<xgrad::BatchNorm1d>(4);
    expected.add<xgrad::Linear>(5, 4, rank0);
    expected.add<xgrad::BatchNorm1d>(4);
    for (Var b : net.buffers()) b.mutable_value().fill(float(w.rank() + 7));
    const std::uint64_t version = net.parameters()[0].version();
    w.broadcast(net);
    CHECK(bitwise_equal(net.parameters(), expected.parameters()));
    for (const Var& b : net.buffers()) CHECK(b.value() == Tensor(b.shape(), 7.f));
    // Changed in place on the receiving ranks: graphs recorded before refuse backward.
    CHECK((net.parameters()[0].version() > version) == (w.rank() > 0));
    CHECK_NOTHROW(w.check_same(net.parameters(), 0));
}

TEST_CASE("broadcast refuses a rank whose variables differ from rank 0's, on every rank") {
    const Distributed& w = world();
    if (w.size() == 1) return;  // one rank agrees with itself
    const Var a(Tensor({4}, 1.f)), b(Tensor({4}, 1.f)), c(Tensor({2, 3}, 1.f));
    const bool last = w.rank() == w.size() - 1;
    const std::string extra = last ? "broadcasts 3 variables, rank 0 2" : "another rank's variables differ from rank 0's";
    CHECK_THROWS_WITH_AS(w.broadcast(last ? std::vector<Var>{a, b, c} : std::vector<Var>{a, b}), doctest::Contains(extra.c_str()),
                         DistributedError);
    const std::string count = last ? "variable 1 has 6 elements on rank " + std::to_string(w.rank()) + ", 4 on rank 0"
                                   : "another rank's variables differ from rank 0's";
    CHECK_THROWS_WITH_AS(w.broadcast({a, last ? c : b}), doctest::Contains(count.c_str()), DistributedError);
}

TEST_CASE("average replaces values by their mean over the ranks, after checking the element counts") {
    const Distributed& w = world();
    const int n = w.size();
    Var a(Tensor({5}, float(w.rank())), false), b(Tensor({2, 2}, float(2 * w.rank() + 1)), false);
    w.average({a, b});
    CHECK(a.value() == Tensor({5}, (n - 1) / 2.f));
    CHECK(b.value() == Tensor({2, 2}, float(n)));
    if (n == 1) return;
    const Var c(Tensor({w.rank() == 0 ? 3u : 4u}, 0.f));
    CHECK_THROWS_WITH_AS(w.average({c}),
                         doctest::Contains("the element counts of the variables to average differ across ranks: rank 0"),
                         DistributedError);
}

TEST_CASE("check_same finds ranks whose parameters diverged, naming the ranks and the step") {
    const Distributed& w = world();
    Var p(Tensor({1000}, 0.25f), true);
    CHECK_NOTHROW(w.check_same({p}, 6));
    if (w.size() == 1) return;
    const int odd = w.size() - 1;
    if (w.rank() == odd) p.mutable_value()(999) = std::nextafter(0.25f, 1.f);  // one bit
    const std::string message = "parameters differ across ranks at step 7: rank 0 has checksum 0x";
    CHECK_THROWS_WITH_AS(w.check_same({p}, 7), doctest::Contains(message.c_str()), DistributedError);
    CHECK_THROWS_WITH_AS(w.check_same({p}, 7), doctest::Contains((", rank " + std::to_string(odd) + " has 0x").c_str()),
                         DistributedError);
    // Ranks that agree with rank 0 are not listed.
    try {
        w.check_same({p}, 7);
    } catch (const DistributedError& e) {
        CHECK((w.size() == 2 || std::string(e.what()).find("rank 1 has") == std::string::npos));
    }
}

TEST_CASE("checksum sees one flipped bit, the element counts and the order of the variables") {
    const Var a(Tensor({7}, 1.5f)), b(Tensor({7}, 1.5f)), c(Tensor({3}, -2.f)), empty(Tensor({0}, 0.f));
    CHECK(xgrad::checksum({a}) == xgrad::checksum({b}));
    CHECK(xgrad::checksum({a, c}) != xgrad::checksum({c, a}));
    CHECK(xgrad::checksum({a, empty}) != xgrad::checksum({empty, a}));
    CHECK(xgrad::checksum({a}, 1) != xgrad::checksum({a}, 2));
    Var d = b.detach();
    for (std::size_t j = 0; j < 7; ++j) {
        d.mutable_value()(j) = std::nextafter(1.5f, 2.f);
        CHECK(xgrad::checksum({a}) != xgrad::checksum({d}));
        d.mutable_value()(j) = 1.5f;
    }
    CHECK(xgrad::checksum({a}) == xgrad::checksum({d}));
}

TEST_CASE("DistributedSampler: rank r computes rows [r*m/N, (r+1)*m/N) of every global batch") {
    const DistributedSampler first(64, 0, 2), second(64, 1, 2), alone(64, 0, 1);
    CHECK(first.begin() == 0);
    CHECK(first.end() == 32);
    CHECK(second.begin() == 32);
    CHECK(second.end() == 64);
    CHECK(second.local_batch() == 32);
    CHECK(alone.local_batch() == 64);
    std::vector<std::size_t> indices(64);
    for (std::size_t i = 0; i < 64; ++i) indices[i] = 1000 + i;
    CHECK(second.local(indices)[0] == 1032);
    CHECK(second.local(indices)[31] == 1063);

    Tensor global = Tensor::from_shape({6, 2, 2}), local = Tensor::from_shape({2, 2, 2});
    for (std::size_t i = 0; i < global.size(); ++i) global.data()[i] = float(i);
    DistributedSampler(6, 2, 3).take_rows(global, local);
    CHECK(local(0, 0, 0) == 16.f);
    CHECK(local(1, 1, 1) == 23.f);

    CHECK_THROWS_WITH_AS(
        DistributedSampler(100, 0, 3),
        "a global batch of 100 samples cannot be split evenly across 3 ranks: the batch must be a positive multiple of 3",
        std::invalid_argument);
    CHECK_THROWS_WITH_AS(DistributedSampler(0, 0, 2), doctest::Contains("a global batch of 0 samples"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(DistributedSampler(64, 2, 2), doctest::Contains("rank 2 of 2 ranks"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(first.local(std::vector<std::size_t>(63)),
                         doctest::Contains("63 sample indices, expected the global batch's 64"), std::invalid_argument);
    Tensor wrong = Tensor::from_shape({3, 2, 2});
    CHECK_THROWS_WITH_AS(DistributedSampler(6, 0, 3).take_rows(global, wrong),
                         doctest::Contains("a global batch (6, 2, 2) (expected 6 rows) into (3, 2, 2) (expected (2, 2, 2))"),
                         xgrad::ShapeError);
}

TEST_CASE("DataParallel: this rank's rows, averaged gradients and means, shared buffers; the identity in one process") {
    const Distributed& w = world();
    const int n = w.size(), rank = w.rank();
    const std::size_t batch = 6;  // split evenly across 1, 2 or 3 ranks
    Var global(Tensor::from_shape({batch, 2}));
    for (std::size_t i = 0; i < global.numel(); ++i) global.mutable_value().data()[i] = float(i);
    Var p(Tensor({3}, 0.f), true);
    p.mutable_grad() = Tensor({3}, float(rank + 1));
    Var buffer(Tensor({2}, float(rank)));

    xgrad::DataParallel alone(batch);
    CHECK(alone.ranks() == 1);
    CHECK(&alone.local_rows(global) == &global);
    xgrad::DataParallel::Gradients none = alone.gradients({p}, 1);
    float mean = float(rank);
    CHECK(none.average(rank == 0, &mean, 1) == (rank == 0));
    CHECK(mean == float(rank));
    CHECK(p.grad() == Tensor({3}, float(rank + 1)));

    xgrad::DataParallel parallel(batch, w);
    CHECK(parallel.ranks() == n);
    CHECK(parallel.local_batch() == batch / std::size_t(n));
    const Var& rows = parallel.local_rows(global);
    CHECK(rows.shape() == xgrad::Shape{batch / std::size_t(n), std::size_t(2)});
    CHECK(rows.value()(0, 0) == float(2 * rank * int(batch) / n));
    global.mutable_value() *= 2.f;
    CHECK(&parallel.local_rows(global) == &rows);  // the same buffer, refilled
    CHECK(rows.value()(0, 1) == 2.f * float(2 * rank * int(batch) / n + 1));

    xgrad::DataParallel::Gradients gradients = parallel.gradients({p}, 1);
    mean = float(rank);
    const bool any = gradients.average(rank == n - 1, &mean, 1);
    CHECK(any);
    CHECK(mean == float(n - 1) / 2.f);
    CHECK(p.grad() == Tensor({3}, float(n + 1) / 2.f));
    parallel.share_buffers({buffer});
    parallel.average_buffers();
    CHECK(buffer.value() == Tensor({2}, float(n - 1) / 2.f));
    if (n > 1) {
        CHECK_THROWS_WITH_AS(xgrad::DataParallel(batch + 1, w), doctest::Contains("cannot be split evenly"),
                             std::invalid_argument);
    }
}

TEST_CASE("N ranks compute what 1 process computes: 10 Adam steps of an MLP, global batch 64") {
    const Distributed& w = world();
    const int n = w.size();
    const std::size_t batch = 64 % n == 0 ? 64 : 32 * std::size_t(n);  // 96 for 3 ranks
    const std::uint64_t seed = 5;
    for (ReduceOrder order : {ReduceOrder::mpi, ReduceOrder::rank_order}) {
        CAPTURE(name(order));
        test::DataParallelMlp ranks(seed, batch, w.rank(), n);  // this rank's share of the N-rank run
        test::DataParallelMlp one(seed, batch, 0, 1);           // one process, the whole batch at once
        test::DataParallelMlp sliced(seed, batch, 0, 1);        // one process, the N slices' gradients summed in rank order
        GradientAllreduce reduce(w, ranks.net.parameters(), order);
        double worst_loss = 0;
        for (int step = 0; step < 10; ++step) {
            double loss = ranks.step(&reduce);
            w.sum(&loss, 1);
            loss /= n;  // the mean of equal-sized slices' means: the global batch's mean
            const float expected = one.step(nullptr);
            sliced.sliced_step(n);
            worst_loss = std::max(worst_loss, std::fabs(loss - expected) / std::fabs(expected));
        }
        const double worst = test::relative_difference(ranks.net.parameters(), one.net.parameters());
        if (w.is_root())
            std::printf("%d ranks (%s) vs 1 process after 10 steps: parameters within %.2g relative, losses within %.2g\n", n,
                        name(order).c_str(), worst, worst_loss);
        CHECK(worst <= 1e-5);
        CHECK(worst_loss <= 1e-5);
        // Rank order sums the slices as gradient accumulation does: the same
        // bits for any N. MPI_Allreduce's order matches it for 2 ranks
        // (a + b == b + a); for more it depends on the library's algorithm.
        if (order == ReduceOrder::rank_order || n <= 2) CHECK(bitwise_equal(ranks.net.parameters(), sliced.net.parameters()));
        // The ranks stay identical to each other.
        CHECK_NOTHROW(w.check_same(ranks.net.parameters(), 10));
    }
}

TEST_CASE("Distributed: one per process") {
    world();
    CHECK_THROWS_WITH_AS(Distributed(), doctest::Contains("one already exists in this process"), std::logic_error);
}
