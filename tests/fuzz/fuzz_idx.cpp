// libFuzzer: the IDX readers on raw bytes, plain or gzipped as they come
// (seeds of both kinds in corpus/idx).
#include <cstddef>
#include <cstdint>

#include "fuzz_input.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    fuzz::read_as_idx(fuzz::as_file(data, size));
    return 0;
}
