// libFuzzer: read_safetensors on any bytes, then load_safetensors into a
// small net (Linear, BatchNorm1d), whose names a mutated seed can match. A
// rejection is a std::runtime_error; anything else is a finding.
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#include <xgrad/io/safetensors.hpp>
#include <xgrad/nn.hpp>

#include "fuzz_input.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string& path = fuzz::as_file(data, size);
    try {
        xgrad::read_safetensors(path);
    } catch (const std::runtime_error&) {
    }
    static xgrad::Rng rng(1);
    try {
        xgrad::Sequential target;
        target.add<xgrad::Linear>(3, 2, rng);
        target.add<xgrad::BatchNorm1d>(2);
        xgrad::load_safetensors(target, path);
    } catch (const std::runtime_error&) {
    }
    return 0;
}
