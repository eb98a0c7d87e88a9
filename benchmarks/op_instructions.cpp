// The fixed cost of recording an op and walking it backward, for counting
// instructions: N iterations of one 1x128 op, forward and backward, on one
// thread. It uses only API that xgrad 0.2 already had, so the same file
// builds against an earlier commit and the counts compare the two (the
// method is in docs/performance.md, "Per op").
//
//   valgrind --tool=callgrind build/benchmarks/op_instructions 100000 relu
#include <cstdlib>
#include <functional>
#include <iostream>
#include <map>
#include <string>

#include <xgrad.hpp>

namespace {

using namespace xgrad;

Var operand(const Shape& shape, std::uint64_t seed) {
    Tensor t = Tensor::from_shape(shape);
    Rng rng(seed);
    rng.fill_uniform(t, -2.f, 2.f);
    return Var(std::move(t), true);
}

}  // namespace

int main(int argc, char** argv) {
    const Var x = operand({1, 128}, 7);
    const Var w = operand({128, 128}, 8);
    const Var b = operand({128}, 9);
    // Each a scalar loss, so that backward() needs no seed.
    const std::map<std::string, std::function<Var()>> ops = {
        {"sum", [&] { return sum(x); }},
        {"relu", [&] { return sum(relu(x)); }},
        {"sigmoid", [&] { return sum(sigmoid(x)); }},
        {"tanh", [&] { return sum(tanh(x)); }},
        {"add_bias", [&] { return sum(x + b); }},
        {"linear", [&] { return sum(linear(x, w, b)); }},
        {"bce", [&] { return bce_with_logits(x, 1.f); }},
        {"mean_sq", [&] { return mean(x * x); }},
    };
    const auto op = argc == 3 ? ops.find(argv[2]) : ops.end();
    if (op == ops.end()) {
        std::cerr << "usage: op_instructions ITERATIONS OP, OP one of:";
        for (const auto& [name, f] : ops) std::cerr << ' ' << name;
        std::cerr << '\n';
        return 2;
    }
    const long iterations = std::atol(argv[1]);
    for (long i = 0; i < iterations; ++i) backward(op->second());
    return 0;
}
