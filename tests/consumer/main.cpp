// A program outside the xgrad tree, built against an installed xgrad (through
// pkg-config) and against xgrad as a Meson subproject by
// scripts/check_install.sh: one step of a linear model, its state written to
// an archive file and read back.
#include <cmath>
#include <cstdio>
#include <string>

#include <xgrad.hpp>
#include <xgrad/io.hpp>

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: consumer ARCHIVE_PATH\n");
        return 2;
    }
    xgrad::Rng rng(1);
    xgrad::Linear layer(3, 2, rng);
    const xgrad::Var x(xgrad::Tensor({4, 3}, 0.5f));
    const xgrad::Var loss = xgrad::mean(xgrad::sigmoid(layer(x)));
    xgrad::backward(loss);
    xgrad::Archive saved;
    layer.save(saved, "layer.");
    xgrad::write_archive(argv[1], saved);
    const xgrad::Archive loaded = xgrad::read_archive(argv[1]);
    const bool same = loaded.tensor("layer.weight") == layer.weight.value();
    const float g = layer.weight.grad()(0, 0);
    std::printf("loss %.6f, dloss/dw00 %.6f, archive round trip %s\n", loss.item(), g, same ? "exact" : "DIFFERS");
    return same && std::isfinite(g) && g != 0.f ? 0 : 1;
}
