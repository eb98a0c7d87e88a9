// libFuzzer: read_archive, with the checksum made right on request (see
// fuzz::archive_bytes) so that the parser behind it gets mutated entries.
// A rejection is a std::runtime_error; anything else is a finding.
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#include <xgrad/io/archive_file.hpp>

#include "fuzz_input.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string bytes = fuzz::archive_bytes(data, size);
    try {
        xgrad::read_archive(fuzz::as_file(bytes.data(), bytes.size()));
    } catch (const std::runtime_error&) {
    }
    return 0;
}
