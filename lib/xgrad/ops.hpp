// Every built-in op. Each is one function whose forward and backward rules
// live together (lib/ops/<family>.cpp, or the header itself for softplus);
// each family header states the gradient formulas.
#pragma once

#include <xgrad/ops/arithmetic.hpp>
#include <xgrad/ops/augment.hpp>
#include <xgrad/ops/conv.hpp>
#include <xgrad/ops/dropout.hpp>
#include <xgrad/ops/elementwise.hpp>
#include <xgrad/ops/linalg.hpp>
#include <xgrad/ops/loss.hpp>
#include <xgrad/ops/norm.hpp>
#include <xgrad/ops/pool.hpp>
#include <xgrad/ops/reduce.hpp>
#include <xgrad/ops/shape.hpp>
#include <xgrad/ops/softplus.hpp>
