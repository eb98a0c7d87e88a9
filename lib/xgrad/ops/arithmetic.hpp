// Arithmetic (lib/ops/arithmetic.cpp). Binary ops broadcast as NumPy does:
// shapes are aligned at their last dimension and each pair of sizes must be
// equal or 1 ((64, 128, 7, 7) with (128, 1, 1), (N, C) with (C), anything
// with a scalar). Each operand's gradient is summed back to its own shape.
#pragma once

#include <xgrad/core/var.hpp>

namespace xgrad {

Var add(const Var& a, const Var& b);  // da = dy, db = dy
Var sub(const Var& a, const Var& b);  // da = dy, db = -dy
Var mul(const Var& a, const Var& b);  // da = dy*b, db = dy*a
Var div(const Var& a, const Var& b);  // da = dy/b, db = -dy*a/b^2
// Elementwise larger / smaller of a and b (NaN if either is NaN). Where
// a == b each gets half of dy, as in PyTorch.
Var maximum(const Var& a, const Var& b);
Var minimum(const Var& a, const Var& b);
// a where condition is nonzero, else b; condition, a and b broadcast
// together. da = dy where condition, db = dy elsewhere.
Var where(const Tensor& condition, const Var& a, const Var& b);

Var neg(const Var& x);                  // dx = -dy
Var scale(const Var& x, float s);       // x*s; dx = s*dy
Var add_scalar(const Var& x, float s);  // x+s; dx = dy

inline Var operator+(const Var& a, const Var& b) { return add(a, b); }
inline Var operator-(const Var& a, const Var& b) { return sub(a, b); }
inline Var operator*(const Var& a, const Var& b) { return mul(a, b); }
inline Var operator/(const Var& a, const Var& b) { return div(a, b); }
inline Var operator-(const Var& x) { return neg(x); }
inline Var operator*(const Var& x, float s) { return scale(x, s); }
inline Var operator*(float s, const Var& x) { return scale(x, s); }
inline Var operator/(const Var& x, float s) { return scale(x, 1.f / s); }
inline Var operator+(const Var& x, float s) { return add_scalar(x, s); }
inline Var operator+(float s, const Var& x) { return add_scalar(x, s); }
inline Var operator-(const Var& x, float s) { return add_scalar(x, -s); }
inline Var operator-(float s, const Var& x) { return add_scalar(neg(x), s); }

}  // namespace xgrad
