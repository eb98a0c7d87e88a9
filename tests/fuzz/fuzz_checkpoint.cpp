// libFuzzer: mnist_gan's checkpoint loader (what --resume reads) into a GAN
// of the configuration of corpus/checkpoint's seed (mnist_gan --hidden 1
// --z-dim 1). The checksum is made right on request (fuzz::archive_bytes).
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "app.hpp"
#include "fuzz_input.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static const gan::GanConfig config = [] {
        gan::GanConfig c = gan::mlp_preset();
        c.hidden = 1;
        c.z_dim = 1;
        return c;
    }();
    const std::string bytes = fuzz::archive_bytes(data, size);
    try {
        gan::verify_checkpoint(fuzz::as_file(bytes.data(), bytes.size()), config);
    } catch (const std::runtime_error&) {
    }
    return 0;
}
