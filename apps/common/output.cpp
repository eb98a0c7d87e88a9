#include "output.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <stdexcept>

#include <fcntl.h>
#include <unistd.h>

namespace common {

TextFile::TextFile(const std::string& path, Mode mode) : path_(path) {
    const int flags = O_WRONLY | O_CREAT | O_CLOEXEC | (mode == Mode::append ? O_APPEND : O_TRUNC);
    fd_ = ::open(path.c_str(), flags, 0644);
    if (fd_ < 0) throw std::runtime_error("cannot open '" + path + "' for writing: " + std::strerror(errno));
}

TextFile::~TextFile() { ::close(fd_); }

void TextFile::write(std::string_view text) {
    while (!text.empty()) {
        const ssize_t n = ::write(fd_, text.data(), text.size());
        if (n < 0) {
            if (errno == EINTR) continue;
            throw std::runtime_error("cannot write '" + path_ + "': " + std::strerror(errno));
        }
        text.remove_prefix(static_cast<std::size_t>(n));
    }
}

void check_writable_directory(const std::string& dir, const std::string& option) {
    std::error_code error;
    std::filesystem::create_directories(dir, error);
    if (error) throw std::runtime_error(option + " '" + dir + "': cannot create the directory: " + error.message());
    const std::string probe = dir + "/.write-test-" + std::to_string(::getpid());
    const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) throw std::runtime_error(option + " '" + dir + "': cannot create files there: " + std::strerror(errno));
    ::close(fd);
    std::remove(probe.c_str());
}

void check_stdout() {
    std::cout.flush();
    if (!std::cout || std::fflush(stdout) != 0 || std::ferror(stdout)) {
        throw std::runtime_error(std::string("cannot write to standard output: ") + std::strerror(errno));
    }
}

void remove_stale_temporary(const std::string& path) {
    const std::string temporary = path + ".tmp";
    std::error_code error;
    if (!std::filesystem::remove(temporary, error)) {
        if (error) throw std::runtime_error("cannot remove the stale temporary file '" + temporary + "': " + error.message());
        return;
    }
    std::cerr << "removed " << temporary << ", left by an interrupted run\n";
}

}  // namespace common
