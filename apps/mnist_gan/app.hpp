// The mnist_gan command line program, callable from tests.
#pragma once

namespace gan {

// Exit codes: 0 done, 1 bad input or I/O error (message on stderr),
// 3 training diverged (NaN/Inf loss), 130 interrupted (checkpoint written);
// CLI11's codes for command-line errors.
int run_app(int argc, const char* const* argv);

}  // namespace gan
