// The apps' output files: every write is checked, so a full disk or an
// unwritable target fails loudly, naming the file, instead of passing
// silently; and an output directory is checked before any long work.
#pragma once

#include <string>
#include <string_view>

namespace common {

// A text file written line by line (log.csv, --csv), each write going
// straight to the file so that a killed run loses no finished line.
class TextFile {
public:
    enum class Mode { truncate, append };
    // Throws std::runtime_error naming the file and the reason.
    TextFile(const std::string& path, Mode mode);
    ~TextFile();
    TextFile(const TextFile&) = delete;
    TextFile& operator=(const TextFile&) = delete;

    void write(std::string_view text);
    const std::string& path() const { return path_; }

private:
    std::string path_;
    int fd_;
};

// Creates `dir` (and its parents) if needed and proves that files can be
// created in it; throws std::runtime_error naming `option`, the directory
// and the reason. Run it before long work, whose results would be lost.
void check_writable_directory(const std::string& dir, const std::string& option);

// Removes path + ".tmp", where an atomic write of `path` (xgrad::AtomicFile)
// killed midway left its partial content, saying so on stderr; throws
// std::runtime_error naming it when it cannot. Call it on start: otherwise
// the file stays until the same output is written again.
void remove_stale_temporary(const std::string& path);

// Flushes standard output; throws if anything written to it was lost (a
// closed pipe or a full disk behind a redirection).
void check_stdout();

}  // namespace common
