#include <xgrad/io/progress.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include <sys/ioctl.h>
#include <unistd.h>

namespace xgrad {
namespace {

// A line longer than the terminal wraps, and "\r" then returns only to the
// start of its last row: every redraw would leave a stale row behind.
std::size_t stderr_columns() {
    winsize size{};
    if (ioctl(STDERR_FILENO, TIOCGWINSZ, &size) != 0 || size.ws_col == 0) return 0;
    return size.ws_col;
}

}  // namespace

Progress::Progress(std::size_t total, std::ostream& out)
    : total_(total), out_(out), mode_(Mode::off), start_(Clock::now()), last_draw_(start_) {
    if (&out == &std::cerr) set_mode(isatty(STDERR_FILENO) ? Mode::redraw : Mode::lines);
}

Progress::~Progress() {
    try {
        finish();
    } catch (...) {
        // a destructor must not throw; a lost newline is harmless
    }
}

void Progress::set_mode(Mode mode) {
    mode_ = mode;
    terminal_columns_ = mode == Mode::redraw && &out_ == &std::cerr ? stderr_columns() : 0;
}

void Progress::set_time_budget(double seconds) { budget_seconds_ = seconds; }

void Progress::update(std::size_t step, const std::string& text) {
    if (mode_ == Mode::off) return;
    if (!started_) {
        started_ = true;
        first_step_ = step;
    }
    step_ = step;
    text_ = text;
    pending_ = true;
    if (due(step, Clock::now())) draw();
}

bool Progress::due(std::size_t step, Clock::time_point now) const {
    if (step == total_) return true;
    if (mode_ == Mode::redraw) return !drawn_ || now - last_draw_ >= std::chrono::milliseconds(100);
    // lines: at a tenth of the run not written yet, or 30 s after the last line
    return tenths_done(step, now) > tenths_written_ || now - last_draw_ >= Seconds(30);
}

std::size_t Progress::tenths_done(std::size_t step, Clock::time_point now) const {
    std::size_t tenths = total_ > 0 ? step * 10 / total_ : 0;
    if (budget_seconds_ > 0) {
        const double of_time = std::min(10.0, std::floor(Seconds(now - start_).count() * 10 / budget_seconds_));
        tenths = std::max(tenths, static_cast<std::size_t>(of_time));
    }
    return tenths;
}

std::string Progress::line() const {
    const double elapsed = Seconds(Clock::now() - start_).count();
    // first_step_ - 1 steps were done before this Progress existed.
    const double done = step_ >= first_step_ ? static_cast<double>(step_ - first_step_ + 1) : 0.;
    const double rate = elapsed > 0 ? done / elapsed : 0;
    const double remaining = step_ < total_ ? static_cast<double>(total_ - step_) : 0.;
    const std::string total = std::to_string(total_);
    std::string step = std::to_string(step_);
    // Right-aligned so the rest of the line does not shift as digits grow.
    if (step.size() < total.size()) step.insert(0, total.size() - step.size(), ' ');

    char rate_text[32];
    std::snprintf(rate_text, sizeof rate_text, "%.1f", rate);
    double eta = rate > 0 ? remaining / rate : -1;  // format_duration: "--:--" for a negative duration
    std::string budget;
    if (budget_seconds_ > 0) {
        const double left = std::max(0.0, budget_seconds_ - elapsed);
        eta = eta < 0 ? left : std::min(eta, left);
        budget = " time " + format_duration(elapsed) + "/" + format_duration(budget_seconds_);
    }
    return "[" + step + "/" + total + "] " + rate_text + " steps/s" + budget + " ETA " + format_duration(eta) + " " + text_;
}

void Progress::draw() {
    last_draw_ = Clock::now();
    pending_ = false;
    std::string line = this->line();
    if (mode_ == Mode::lines) {
        out_ << line << '\n' << std::flush;
        tenths_written_ = tenths_done(step_, last_draw_);
        return;
    }
    if (terminal_columns_ > 1 && line.size() >= terminal_columns_) line.resize(terminal_columns_ - 1);

    const std::size_t length = line.size();
    if (length < previous_length_) line.append(previous_length_ - length, ' ');
    out_ << '\r' << line << std::flush;
    previous_length_ = length;
    drawn_ = true;
}

void Progress::finish() {
    if (mode_ == Mode::lines) {  // the state of a stop between two lines
        if (pending_) draw();
        return;
    }
    if (!drawn_) return;
    if (pending_) draw();
    out_ << '\n' << std::flush;
    drawn_ = false;
    previous_length_ = 0;
}

std::string format_duration(double seconds) {
    // Beyond ~30 years the ETA means "never" (and would overflow llround).
    if (!(seconds >= 0 && seconds < 1e9)) return "--:--";
    const auto total = static_cast<unsigned long long>(std::llround(seconds));
    const unsigned long long h = total / 3600, m = total / 60 % 60, s = total % 60;
    char text[48];
    if (h > 0)
        std::snprintf(text, sizeof text, "%llu:%02llu:%02llu", h, m, s);
    else
        std::snprintf(text, sizeof text, "%02llu:%02llu", m, s);
    return text;
}

}  // namespace xgrad
