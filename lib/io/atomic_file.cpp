#include <xgrad/io/atomic_file.hpp>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <stdexcept>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace xgrad {

std::string temporary_path(const std::string& path) { return path + ".tmp"; }

AtomicFile::AtomicFile(const std::string& path) : path_(path), tmp_(temporary_path(path)) {
    // A directory cannot be replaced; refusing it here also avoids creating
    // a temporary file beside it.
    struct stat st;
    if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
        errno = EISDIR;
        throw std::runtime_error("xgrad: cannot write '" + path_ + "': " + std::strerror(errno));
    }
    fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) fail("creating");
}

AtomicFile::~AtomicFile() {
    if (committed_) return;
    if (fd_ >= 0) ::close(fd_);
    std::remove(tmp_.c_str());
}

void AtomicFile::fail(const char* step) {
    const std::string why = std::strerror(errno);
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    std::remove(tmp_.c_str());
    throw std::runtime_error("xgrad: cannot write '" + path_ + "' (" + step + " '" + tmp_ + "'): " + why);
}

void AtomicFile::write(std::string_view bytes) {
    if (fd_ < 0) throw std::logic_error("xgrad::AtomicFile: write to '" + path_ + "' after commit or failure");
    while (!bytes.empty()) {
        const ssize_t n = ::write(fd_, bytes.data(), bytes.size());
        if (n < 0) {
            if (errno == EINTR) continue;
            fail("writing");
        }
        bytes.remove_prefix(static_cast<std::size_t>(n));
    }
}

void AtomicFile::commit() {
    if (fd_ < 0) throw std::logic_error("xgrad::AtomicFile: commit of '" + path_ + "' after commit or failure");
    if (::fsync(fd_) != 0) fail("syncing");
    const int closed = ::close(fd_);
    fd_ = -1;
    if (closed != 0) fail("closing");
    if (std::rename(tmp_.c_str(), path_.c_str()) != 0) fail("renaming");
    committed_ = true;
    const std::size_t slash = path_.rfind('/');
    const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path_.substr(0, slash);
    const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir_fd >= 0) {
        // Best effort: the file is complete and in place; only its
        // durability across a power loss depends on this.
        ::fsync(dir_fd);
        ::close(dir_fd);
    }
}

void write_file_atomically(const std::string& path, std::initializer_list<std::string_view> parts) {
    AtomicFile file(path);
    for (std::string_view part : parts) file.write(part);
    file.commit();
}

}  // namespace xgrad
