#include <xgrad/nn/minibatch_stddev.hpp>

#include <xgrad/ops/arithmetic.hpp>
#include <xgrad/ops/elementwise.hpp>
#include <xgrad/ops/reduce.hpp>
#include <xgrad/ops/shape.hpp>

namespace xgrad {

Var minibatch_stddev(const Var& x, float eps) {
    if (x.dim() < 2 || x.shape()[0] < 1) {
        throw ShapeError("xgrad::minibatch_stddev: expected a batch (N, F, ...), got " + shape_string(x.shape()));
    }
    const Var centred = x - mean(x, {0}, true);
    const Var stddev = sqrt(mean(centred * centred, {0}) + eps);
    Shape feature = x.shape();
    feature[1] = 1;
    return concat({x, broadcast_to(mean(stddev), feature)}, 1);
}

}  // namespace xgrad
