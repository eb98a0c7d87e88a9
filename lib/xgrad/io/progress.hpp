// A one-line progress display for long loops (no progress bar is packaged in
// Debian): "\r[step/total] 12.3 steps/s ETA 01:23 <status>", redrawn in place
// on stderr when stderr is a terminal, silent otherwise (logs and pipes get
// no carriage-return noise).
#pragma once

#include <chrono>
#include <cstddef>
#include <iostream>
#include <string>

namespace xgrad {

class Progress {
public:
    // Draws only when `out` is std::cerr and stderr is a terminal, unless
    // force_enabled() says otherwise.
    explicit Progress(std::size_t total, std::ostream& out = std::cerr);
    // Ends the line if update() drew anything, so later output starts clean.
    ~Progress();
    Progress(const Progress&) = delete;
    Progress& operator=(const Progress&) = delete;

    void force_enabled(bool on);

    // Call after every step with the 1-based number of steps done and a
    // status text. Redraws at most ~10 times a second, and always for the
    // last step. The rate counts steps since the first update (a resumed run
    // starting at step 5001 is not credited with 5000 free steps) over the
    // time since construction.
    void update(std::size_t step, const std::string& text);

    // Draws the latest state if it was skipped, then ends the line. Calling it
    // again, or with nothing drawn, writes nothing.
    void finish();

private:
    using Clock = std::chrono::steady_clock;
    void draw();

    std::size_t total_;
    std::ostream& out_;
    bool enabled_;
    std::size_t terminal_columns_ = 0;  // 0: do not truncate
    Clock::time_point start_;
    Clock::time_point last_draw_;
    bool started_ = false;  // update() was called at least once
    bool drawn_ = false;    // a line is on screen and needs its newline
    bool pending_ = false;  // the latest state has not been drawn
    std::size_t first_step_ = 0;
    std::size_t step_ = 0;
    std::string text_;
    std::size_t previous_length_ = 0;
};

// "01:23" below an hour, "1:02:03" from an hour on, rounded to the second;
// "--:--" for a negative, non-finite or absurd (>= 1e9 s) duration.
std::string format_duration(double seconds);

}  // namespace xgrad
