// Per-op cost of xgrad: forward alone ("fwd", operands need no gradient, so
// nothing is recorded) and forward + backward ("fwd_bwd", every operand
// requires a gradient; a non-scalar result is reduced by sum(), whose own
// cost is listed as sum/...). GAN shapes show throughput; the 1x128 rows
// show the fixed cost per op (node, pool, dispatch).
//
//   build-perf/benchmarks/ops_bench [--benchmark_filter=REGEX]
// One thread (and BLAS on one), as in the tests. The SIMD level of the
// elementwise kernels (XGRAD_SIMD forces one) is printed as xgrad_simd.
#include <functional>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include <xgrad.hpp>
#include <xgrad/core/simd.hpp>

namespace {

using namespace xgrad;
using OpFn = std::function<Var(const std::vector<Var>&)>;

std::vector<Var> operands(const std::vector<Shape>& shapes, bool requires_grad) {
    Rng rng(7);
    std::vector<Var> out;
    for (const Shape& s : shapes) {
        Tensor t = Tensor::from_shape(s);
        rng.fill_uniform(t, -2.f, 2.f);
        out.emplace_back(std::move(t), requires_grad);
    }
    return out;
}

void forward(benchmark::State& state, const OpFn& op, const std::vector<Shape>& shapes) {
    const std::vector<Var> in = operands(shapes, false);
    for (auto _ : state) benchmark::DoNotOptimize(op(in).value().data());
}

void forward_backward(benchmark::State& state, const OpFn& op, const std::vector<Shape>& shapes) {
    const std::vector<Var> in = operands(shapes, true);
    for (auto _ : state) {
        const Var y = op(in);
        backward(y.value().size() == 1 ? y : sum(y));
    }
}

std::string shape_name(const std::vector<Shape>& shapes) {
    std::string name;
    for (const Shape& s : shapes) {
        if (!name.empty()) name += ",";
        for (std::size_t d = 0; d < s.size(); ++d) name += (d ? "x" : "") + std::to_string(s[d]);
    }
    return name;
}

void add(const std::string& op_name, const OpFn& op, const std::vector<std::vector<Shape>>& cases) {
    for (const auto& shapes : cases) {
        const std::string name = op_name + "/" + shape_name(shapes);
        benchmark::RegisterBenchmark((name + "/fwd").c_str(), forward, op, shapes)->MinTime(0.2);
        benchmark::RegisterBenchmark((name + "/fwd_bwd").c_str(), forward_backward, op, shapes)->MinTime(0.2);
    }
}

void register_all() {
    const std::vector<std::vector<Shape>> unary = {{{128, 784}}, {{128, 128}}, {{128, 1}}, {{1, 128}}};
    add("matmul", [](const auto& v) { return matmul(v[0], v[1]); },
        {{{128, 784}, {784, 128}}, {{128, 128}, {128, 784}}, {{128, 128}, {128, 1}}, {{1, 128}, {128, 128}}});
    add("linear", [](const auto& v) { return linear(v[0], v[1], v[2]); },
        {{{128, 784}, {128, 784}, {128}},
         {{128, 128}, {784, 128}, {784}},
         {{128, 128}, {1, 128}, {1}},
         {{1, 128}, {128, 128}, {128}}});
    add("add_broadcast", [](const auto& v) { return v[0] + v[1]; },
        {{{128, 784}, {1, 784}}, {{128, 128}, {1, 128}}, {{1, 128}, {1, 128}}});
    add(
        "relu", [](const auto& v) { return relu(v[0]); }, unary);
    // Also at the shape of a convolutional discriminator's activations.
    add("leaky_relu", [](const auto& v) { return leaky_relu(v[0], 0.2f); },
        {{{128, 784}}, {{128, 128}}, {{128, 1}}, {{1, 128}}, {{64, 128, 7, 7}}});
    add(
        "sigmoid", [](const auto& v) { return sigmoid(v[0]); }, unary);
    add(
        "tanh", [](const auto& v) { return xgrad::tanh(v[0]); }, unary);
    add(
        "exp", [](const auto& v) { return xgrad::exp(v[0]); }, unary);
    add(
        "bce_with_logits", [](const auto& v) { return bce_with_logits(v[0], 1.f); }, unary);
    add(
        "sum", [](const auto& v) { return sum(v[0]); }, unary);
    add(
        "mean", [](const auto& v) { return mean(v[0]); }, unary);
    add(
        "mean_rows", [](const auto& v) { return mean(v[0], {0}); }, unary);
    // Training mode at the dcgan preset's two batch-norm shapes.
    add("batch_norm", [](const auto& v) { return batch_norm(v[0], v[1], v[2], Var(), Var(), {}); },
        {{{64, 128, 7, 7}, {128}, {128}}, {{64, 64, 14, 14}, {64}, {64}}});
    add("layer_norm", [](const auto& v) { return layer_norm(v[0], 1, v[1], v[2]); }, {{{128, 784}, {784}, {784}}});
}

}  // namespace

int main(int argc, char** argv) {
    xgrad::set_num_threads(1);  // and BLAS on one thread
    register_all();
    benchmark::AddCustomContext("xgrad_simd", xgrad::simd::name(xgrad::simd::level()));
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
