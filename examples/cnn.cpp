// The README's CNN example: a small convolutional net tells horizontal bars
// from vertical ones in 8 x 8 images.
#include <xgrad.hpp>
using namespace xgrad;

int main() {
    Rng rng(1);
    Sequential net;
    net.add<Conv2d>(1, 8, 3, rng, Conv2dOptions{/*stride=*/1, /*padding=*/1});  // (N, 1, 8, 8) -> (N, 8, 8, 8)
    net.add<ReLU>();
    net.add<MaxPool2d>(2);  // -> (N, 8, 4, 4)
    net.add<Flatten>();     // -> (N, 128)
    net.add<Linear>(128, 2, rng);
    Adam adam(net.parameters(), AdamOptions{/*lr=*/0.01f});

    // 32 images: a bright bar in a random row (class 0) or column (class 1).
    Var images(Tensor({32, 1, 8, 8}, 0.f)), labels(Tensor({32, 2}, 0.f));
    for (std::size_t i = 0; i < 32; ++i) {
        const std::size_t at = rng.below(8), cls = i % 2;
        for (std::size_t k = 0; k < 8; ++k) images.mutable_value()(i, 0, cls ? k : at, cls ? at : k) = 1.f;
        labels.mutable_value()(i, cls) = 1.f;
    }
    for (int step = 0; step < 100; ++step) {
        Var loss = softmax_cross_entropy(net(images), labels);
        adam.zero_grad();
        backward(loss);
        adam.step();
    }
    const Tensor logits = net(images).value();
    int right = 0;
    for (std::size_t i = 0; i < 32; ++i) right += (logits(i, 1) > logits(i, 0)) == (i % 2 == 1);
    return right == 32 ? 0 : 1;
}
