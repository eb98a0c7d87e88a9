// The built-in differentiable ops. Each is one function whose forward and
// backward live together in lib/ops/<family>.cpp; the formula of each
// gradient is given here. All values are float32 matrices (see tensor.hpp).
//
// Broadcasting (add, sub, mul): two shapes fit when each dimension is equal
// or 1 in one operand: (R,C) with (R,C), (1,C) rows, (R,1) columns or (1,1).
// Gradients are summed back to each operand's own shape.
#pragma once

#include <xgrad/core/var.hpp>

namespace xgrad {

// ---- linear algebra (lib/ops/linalg.cpp) ------------------------------------
// a (R,K) . b (K,C) -> (R,C).   da = dy . b^T,  db = a^T . dy.
Var matmul(const Var& a, const Var& b);
// x (N,I) . w (I,O) + b (1,O) -> (N,O), one fused op.
// dx = dy . w^T,  dw = x^T . dy,  db = column sums of dy.
Var linear(const Var& x, const Var& w, const Var& b);

// ---- arithmetic (lib/ops/arithmetic.cpp) -------------------------------------
Var add(const Var& a, const Var& b);  // da = dy, db = dy (summed to shape)
Var sub(const Var& a, const Var& b);  // da = dy, db = -dy
Var mul(const Var& a, const Var& b);  // da = dy*b, db = dy*a
Var neg(const Var& x);                // dx = -dy
Var scale(const Var& x, float s);     // x*s; dx = s*dy
Var add_scalar(const Var& x, float s);  // x+s; dx = dy

inline Var operator+(const Var& a, const Var& b) { return add(a, b); }
inline Var operator-(const Var& a, const Var& b) { return sub(a, b); }
inline Var operator*(const Var& a, const Var& b) { return mul(a, b); }
inline Var operator-(const Var& x) { return neg(x); }
inline Var operator*(const Var& x, float s) { return scale(x, s); }
inline Var operator*(float s, const Var& x) { return scale(x, s); }
inline Var operator+(const Var& x, float s) { return add_scalar(x, s); }
inline Var operator+(float s, const Var& x) { return add_scalar(x, s); }
inline Var operator-(const Var& x, float s) { return add_scalar(x, -s); }
inline Var operator-(float s, const Var& x) { return add_scalar(neg(x), s); }

// ---- reductions (lib/ops/reduce.cpp) -----------------------------------------
enum class Axis { rows = 0, cols = 1 };
// Sum of all elements -> (1,1); dx = dy broadcast.
Var sum(const Var& x);
// Axis::rows sums down each column -> (1,C); Axis::cols sums along each row -> (R,1).
Var sum(const Var& x, Axis axis);
Var mean(const Var& x);              // sum(x) / size;  dx = dy / size
Var mean(const Var& x, Axis axis);   // sum(x, axis) / count along axis

// ---- elementwise functions (lib/ops/activation.cpp) ----------------------------
Var exp(const Var& x);   // dx = dy * y
Var log(const Var& x);   // dx = dy / x
Var relu(const Var& x);  // dx = dy * (x > 0); the gradient at exactly 0 is 0, and relu(NaN) = NaN, as in PyTorch
Var leaky_relu(const Var& x, float negative_slope = 0.01f);  // dx = dy * (x > 0 ? 1 : slope)
Var sigmoid(const Var& x);  // y = 1/(1+e^-x); dx = dy * y * (1-y)
Var tanh(const Var& x);     // dx = dy * (1 - y^2)

// ---- losses (lib/ops/loss.cpp) --------------------------------------------------
// Mean binary cross-entropy of sigmoid(logits) against targets in [0,1],
// fused so that it never forms log(sigmoid(x)):
//   l = max(x,0) - x*t + log1p(exp(-|x|)),   dx = (sigmoid(x) - t) / n,   dt = -x / n
// Finite and exact for any |x| (including 100 and beyond). Output (1,1).
Var bce_with_logits(const Var& logits, const Var& targets);
// The same against one target value for every element (a GAN's 1 or 0 label).
Var bce_with_logits(const Var& logits, float target);
// Mean over the N rows of the cross-entropy between each row of targets (class
// probabilities: one-hot for labels) and softmax(logits), fused so that it
// never forms log(softmax(x)) from a rounded softmax:
//   l = (1/N) sum_r [ lse_r * T_r - sum_c t_rc x_rc ],  lse_r = m_r + log sum_c exp(x_rc - m_r),
//   m_r = max_c x_rc,  T_r = sum_c t_rc (1 for probabilities),
//   dx = (softmax(x) T_r - t) / N  (= (softmax(x) - t) / N for probability rows),   dt = -log softmax(x) / N.
// Finite and exact for any |x| (logits of +-1000 included). Output (1,1).
Var softmax_cross_entropy(const Var& logits, const Var& targets);

// ---- regularisation (lib/ops/dropout.cpp) -----------------------------------------
class Rng;
// Inverted dropout: each element is kept with probability 1-p and scaled by
// 1/(1-p), else zeroed, so the expected value is x and evaluation needs no
// rescaling. Draws one rng.uniform per element (whatever p), in row-major
// order. dx = dy * mask / (1-p), with the mask of the forward pass.
// Throws std::invalid_argument unless 0 <= p < 1.
Var dropout(const Var& x, float p, Rng& rng);

}  // namespace xgrad
