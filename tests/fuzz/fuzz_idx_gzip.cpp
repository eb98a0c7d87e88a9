// libFuzzer: the IDX readers on gzip streams made from the input, so that
// the decompressed content is what mutates. The first byte chooses how the
// stream is damaged: bit 0 splits it into two members, bit 1 appends
// garbage after it, bit 2 cuts its end off.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#include <zlib.h>

#include "fuzz_input.hpp"

namespace {

std::string gzip(const std::uint8_t* data, std::size_t size) {
    z_stream z{};
    if (deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) throw std::logic_error("deflateInit2");
    std::string out(deflateBound(&z, static_cast<uLong>(size)), '\0');
    z.next_in = const_cast<Bytef*>(data);
    z.avail_in = static_cast<uInt>(size);
    z.next_out = reinterpret_cast<Bytef*>(out.data());
    z.avail_out = static_cast<uInt>(out.size());
    const int code = deflate(&z, Z_FINISH);
    out.resize(z.total_out);
    deflateEnd(&z);
    if (code != Z_STREAM_END) throw std::logic_error("deflate");
    return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 2) return 0;
    const std::uint8_t mode = data[0], where = data[1];
    const std::uint8_t* content = data + 2;
    const std::size_t length = size - 2;
    std::string stream;
    if (mode & 1) {
        const std::size_t split = length == 0 ? 0 : where % length;
        stream = gzip(content, split) + gzip(content + split, length - split);
    } else {
        stream = gzip(content, length);
    }
    if (mode & 2) stream.append(std::string(1 + mode / 8, static_cast<char>(where)));
    if (mode & 4) stream.resize(stream.size() - std::min<std::size_t>(stream.size(), 1 + where % 16));
    fuzz::read_as_idx(fuzz::as_file(stream.data(), stream.size()));
    return 0;
}
