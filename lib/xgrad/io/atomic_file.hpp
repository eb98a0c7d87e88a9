// Files that are never seen half-written. The bytes go to a temporary file
// beside the target (its name plus ".tmp"), which is synced and renamed over
// the target only once complete: a crash or a kill leaves the old file or
// the new one, whole, and at most a stale temporary file, which the next
// write of the same target replaces. Archives, IDX files, PNG images and the
// apps' outputs are all written this way.
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>

namespace xgrad {

// Where AtomicFile(path) writes until commit(): path + ".tmp".
std::string temporary_path(const std::string& path);

class AtomicFile {
public:
    // Creates the temporary file. Every failure, here and below, throws
    // std::runtime_error naming the target, the step, the temporary file
    // and the reason (e.g. "No space left on device").
    explicit AtomicFile(const std::string& path);
    // Removes the temporary file unless commit() succeeded.
    ~AtomicFile();
    AtomicFile(const AtomicFile&) = delete;
    AtomicFile& operator=(const AtomicFile&) = delete;

    void write(std::string_view bytes);
    // Syncs and closes the temporary file, renames it over the target and
    // syncs the directory, so that the new file also survives a power loss.
    void commit();
    const std::string& path() const { return path_; }

private:
    [[noreturn]] void fail(const char* step);

    std::string path_, tmp_;
    int fd_ = -1;
    bool committed_ = false;
};

// `parts`, in order, as one file.
void write_file_atomically(const std::string& path, std::initializer_list<std::string_view> parts);

}  // namespace xgrad
