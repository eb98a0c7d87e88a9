// Progress for long loops (no progress bar is packaged in Debian), on
// stderr: "[step/total] 12.3 steps/s ETA 01:23 <status>". On a terminal the
// line is redrawn in place; when stderr goes to a file or a pipe (a log, a CI
// job, nohup) a full line is written at every tenth of the total and at
// least every 30 s, so a log shows a long run moving without carriage-return
// noise.
#pragma once

#include <chrono>
#include <cstddef>
#include <iostream>
#include <string>

namespace xgrad {

class Progress {
public:
    enum class Mode {
        off,     // writes nothing
        redraw,  // one line redrawn in place (a terminal)
        lines,   // a line at every tenth of the total and at least every 30 s
    };
    // On std::cerr: redraw when stderr is a terminal, lines otherwise. On any
    // other stream: off, unless set_mode() says otherwise.
    explicit Progress(std::size_t total, std::ostream& out = std::cerr);
    // Ends the line if update() drew anything, so later output starts clean.
    ~Progress();
    Progress(const Progress&) = delete;
    Progress& operator=(const Progress&) = delete;

    void set_mode(Mode mode);

    // The loop also ends once `seconds` have passed since construction (a
    // wall-clock budget), if that comes before the total: the line then
    // shows the time used of the budget ("time 01:23/05:00"), the ETA is the
    // sooner of the two ends, and lines mode writes at every tenth of
    // whichever is further along, the steps or the time.
    void set_time_budget(double seconds);

    // Call after every step with the 1-based number of steps done and a
    // status text. Redraws at most ~10 times a second (lines: at each tenth
    // or after 30 s), and always for the last step. The rate counts steps since the first update (a resumed run
    // starting at step 5001 is not credited with 5000 free steps) over the
    // time since construction.
    void update(std::size_t step, const std::string& text);

    // Draws the latest state if it was skipped, then ends the line (lines:
    // writes it as a line). Calling it again, or with nothing drawn, writes
    // nothing.
    void finish();

private:
    using Clock = std::chrono::steady_clock;
    void draw();

    using Seconds = std::chrono::duration<double>;
    bool due(std::size_t step, Clock::time_point now) const;
    // Tenths of the run done (0 to 10): of the total, or of the time budget if further along.
    std::size_t tenths_done(std::size_t step, Clock::time_point now) const;
    std::string line() const;

    std::size_t total_;
    double budget_seconds_ = 0;  // 0: none
    std::ostream& out_;
    Mode mode_;
    std::size_t terminal_columns_ = 0;  // 0: do not truncate
    Clock::time_point start_;
    Clock::time_point last_draw_;
    bool started_ = false;            // update() was called at least once
    bool drawn_ = false;              // a line is on screen and needs its newline
    bool pending_ = false;            // the latest state has not been drawn
    std::size_t tenths_written_ = 0;  // lines: the tenths of the total already reported
    std::size_t first_step_ = 0;
    std::size_t step_ = 0;
    std::string text_;
    std::size_t previous_length_ = 0;
};

// "01:23" below an hour, "1:02:03" from an hour on, rounded to the second;
// "--:--" for a negative, non-finite or absurd (>= 1e9 s) duration.
std::string format_duration(double seconds);

}  // namespace xgrad
