// The precompiled header of libxgrad (meson's cpp_pch; -Db_pch=false builds
// without it): the headers most of its 38 sources include, xtensor's above
// all, parsed once instead of once per source. It pays for this target only:
// the other targets' measured slower with one (docs/performance.md,
// "Building"). No #pragma once: a precompiled header is compiled as a main
// file. Every source still includes what it uses: the clang build in CI
// compiles without precompiled headers, so a missing include fails there.
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include <xtensor/xmath.hpp>
#include <xtensor/xnoalias.hpp>

#include <xgrad/core/op.hpp>
#include <xgrad/core/var.hpp>
