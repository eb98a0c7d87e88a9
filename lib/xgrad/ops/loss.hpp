// Losses (lib/ops/loss.cpp): each a scalar (rank 0), the mean over its
// elements; they throw ShapeError for an empty input (the mean of nothing)
// and for operands of different shapes.
#pragma once

#include <xgrad/core/var.hpp>

namespace xgrad {

// Mean binary cross-entropy of sigmoid(logits) against targets in [0,1],
// fused so that it never forms log(sigmoid(x)):
//   l = max(x,0) - x*t + log1p(exp(-|x|)),   dx = (sigmoid(x) - t) / n,   dt = -x / n
// Finite and exact for any |x| (including 100 and beyond).
Var bce_with_logits(const Var& logits, const Var& targets);
// The same against one target value for every element (a GAN's 1 or 0 label).
Var bce_with_logits(const Var& logits, float target);
// Mean over all rows (every position of the leading dimensions) of the
// cross-entropy between targets (class probabilities along the last axis:
// one-hot for labels) and softmax(logits), fused so that it never forms
// log(softmax(x)) from a rounded softmax:
//   l = (1/N) sum_r [ lse_r * T_r - sum_c t_rc x_rc ],  lse_r = m_r + log sum_c exp(x_rc - m_r),
//   m_r = max_c x_rc,  T_r = sum_c t_rc (1 for probabilities),
//   dx = (softmax(x) T_r - t) / N,   dt = -log softmax(x) / N.
// Finite and exact for any |x| (logits of +-1000 included).
Var softmax_cross_entropy(const Var& logits, const Var& targets);
// mean((p - t)^2);  dp = 2 (p - t) / n,  dt = -dp.
Var mse_loss(const Var& prediction, const Var& target);
// mean |p - t|;  dp = sign(p - t) / n (0 where p == t),  dt = -dp.
Var l1_loss(const Var& prediction, const Var& target);

}  // namespace xgrad
