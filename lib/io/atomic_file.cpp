#include "atomic_file.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <stdexcept>

#include <fcntl.h>
#include <unistd.h>

namespace xgrad::detail {

void write_file_atomically(const std::string& path, std::initializer_list<std::string_view> parts) {
    const std::string tmp = path + ".tmp";
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    auto fail = [&](const char* step) {
        const std::string why = std::strerror(errno);
        if (fd >= 0) ::close(fd);
        std::remove(tmp.c_str());
        throw std::runtime_error("xgrad: cannot write '" + path + "' (" + step + " '" + tmp + "'): " + why);
    };
    if (fd < 0) fail("creating");
    for (std::string_view part : parts) {
        while (!part.empty()) {
            const ssize_t n = ::write(fd, part.data(), part.size());
            if (n < 0) {
                if (errno == EINTR) continue;
                fail("writing");
            }
            part.remove_prefix(static_cast<std::size_t>(n));
        }
    }
    if (::fsync(fd) != 0) fail("syncing");
    const int closed = ::close(fd);
    fd = -1;
    if (closed != 0) fail("closing");
    if (std::rename(tmp.c_str(), path.c_str()) != 0) fail("renaming");
}

}  // namespace xgrad::detail
