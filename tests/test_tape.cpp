#include <doctest/doctest.h>
#include <xgrad/ops.hpp>
#include <xgrad/gradcheck.hpp>
#include <xgrad/random.hpp>
#include <xgrad/ops/softplus.hpp>
#include <iostream>
using namespace xgrad;
TEST_CASE("smoke") {
  Rng rng(3);
  auto mk = [&](size_t r, size_t c){ Tensor t({r,c}); rng.fill_uniform(t,-2,2); return Var(t,true);} ;
  std::vector<Var> in{mk(4,3), mk(3,5), mk(1,5)};
  auto r = gradcheck([](const std::vector<Var>& v){ return sigmoid(linear(v[0], v[1], v[2])) * tanh(v[2]) + softplus(matmul(v[0], v[1]) - v[2]); }, in);
  std::cout << r.report() << "\n";
  CHECK(r.ok);
  auto r2 = gradcheck([](const std::vector<Var>& v){ return bce_with_logits(matmul(v[0], v[1]), sigmoid(v[2]*v[2]) + matmul(v[0],v[1])*0.f) + mean(v[0], Axis::cols) ; }, in);
  std::cout << r2.report() << "\n";
}
