// The README's example: a two-layer MLP learns XOR with backward() and Adam.
#include <xgrad.hpp>
using namespace xgrad;

int main() {
    Rng rng(1);
    Sequential net;
    net.add<Linear>(2, 8, rng);
    net.add<Tanh>();
    net.add<Linear>(8, 1, rng);
    Adam adam(net.parameters(), AdamOptions{/*lr=*/0.05f});
    const Var x(Tensor{{0, 0}, {0, 1}, {1, 0}, {1, 1}}), y(Tensor{0, 1, 1, 0});
    for (int step = 0; step < 500; ++step) {
        Var logits = flatten(net(x), 0);        // (4, 1) -> (4)
        Var loss = bce_with_logits(logits, y);  // records the graph
        adam.zero_grad();
        backward(loss);  // gradients of every parameter
        adam.step();
    }
    const Tensor p = sigmoid(net(x)).value();  // (4, 1)
    return p(0, 0) < 0.5f && p(1, 0) > 0.5f && p(2, 0) > 0.5f && p(3, 0) < 0.5f ? 0 : 1;
}
