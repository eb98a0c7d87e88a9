// Second derivatives with xgrad::grad(..., create_graph): Hessian-vector
// products of a small MLP's loss, checked against finite differences of its
// gradient, and a few Newton steps (conjugate gradients on Hessian-vector
// products, never forming the Hessian) on a convex problem, L2-regularised
// logistic regression. Run by meson test: exits 1 if a check fails.
#include <cmath>
#include <cstdio>
#include <vector>

#include <xgrad.hpp>
using namespace xgrad;

namespace {

// H v = d/dp (grad(L, p) . v), one Var per parameter.
std::vector<Var> hessian_vector_product(const Var& loss, const std::vector<Var>& parameters, const std::vector<Var>& v) {
    GradOptions recorded;
    recorded.create_graph = true;
    const std::vector<Var> g = grad({loss}, parameters, recorded);
    Var g_dot_v = sum(g[0] * v[0]);
    for (std::size_t k = 1; k < g.size(); ++k) g_dot_v = g_dot_v + sum(g[k] * v[k]);
    return grad({g_dot_v}, parameters);
}

double dot(const std::vector<Tensor>& a, const std::vector<Tensor>& b) {
    double total = 0;
    for (std::size_t k = 0; k < a.size(); ++k) {
        for (std::size_t i = 0; i < a[k].size(); ++i) total += double(a[k].data()[i]) * b[k].data()[i];
    }
    return total;
}

std::vector<Tensor> values(const std::vector<Var>& vars) {
    std::vector<Tensor> out;
    for (const Var& v : vars) out.push_back(v.value());
    return out;
}

// Part 1: an MLP's H v against (grad(p + h v) - grad(p - h v)) / 2h, in double.
bool check_mlp() {
    Rng rng(3);
    Sequential net;
    net.add<Linear>(4, 16, rng);
    net.add<Tanh>();
    net.add<Linear>(16, 1, rng);
    Tensor inputs = Tensor::from_shape({32, 4}), targets = Tensor::from_shape({32, 1});
    rng.fill_normal(inputs, 0.f, 1.f);
    rng.fill_uniform(targets, -1.f, 1.f);
    const Var x(inputs), y(targets);
    const std::vector<Var> params = net.parameters();
    std::vector<Var> v;
    for (const Var& p : params) {
        Tensor t = Tensor::from_shape(p.shape());
        rng.fill_uniform(t, -1.f, 1.f);
        v.push_back(Var(std::move(t)));
    }
    const auto loss = [&] { return mse_loss(net(x), y); };
    const std::vector<Tensor> hv = values(hessian_vector_product(loss(), params, v));

    // The gradient at p +- h v, by the ordinary (first-order) backward.
    const double h = 1e-2;
    const auto gradient_at = [&](double step) {
        std::vector<Var> p = params;
        for (std::size_t k = 0; k < p.size(); ++k) p[k].mutable_value() += static_cast<float>(step) * v[k].value();
        std::vector<Tensor> g = values(grad({loss()}, params));
        for (std::size_t k = 0; k < p.size(); ++k) p[k].mutable_value() -= static_cast<float>(step) * v[k].value();
        return g;
    };
    const std::vector<Tensor> up = gradient_at(h), down = gradient_at(-h);
    double worst = 0, scale = 0;
    std::size_t count = 0;
    for (std::size_t k = 0; k < hv.size(); ++k) {
        count += hv[k].size();
        for (std::size_t i = 0; i < hv[k].size(); ++i) {
            const double numeric = (double(up[k].data()[i]) - down[k].data()[i]) / (2 * h);
            worst = std::max(worst, std::abs(hv[k].data()[i] - numeric));
            scale = std::max(scale, std::abs(numeric));
        }
    }
    std::printf("MLP 4-16-1, %zu parameters: |Hv - finite differences| <= %.2e (largest |Hv| %.3f)\n", count, worst, scale);
    return worst <= 2e-3 * std::max(1.0, scale);
}

// Part 2: Newton's method on L(w) = mean(softplus(-t (X w))) + lambda/2 |w|^2,
// each step solving H d = -g by conjugate gradients on Hessian-vector products.
bool newton_logistic_regression() {
    Rng rng(5);
    const std::size_t n = 200, features = 6;
    Tensor data = Tensor::from_shape({n, features}), truth = Tensor::from_shape({features, 1});
    rng.fill_normal(data, 0.f, 1.f);
    rng.fill_normal(truth, 0.f, 1.f);
    Tensor labels = Tensor::from_shape({n, 1});  // +-1, with 10% flipped: not separable
    for (std::size_t i = 0; i < n; ++i) {
        double s = 0;
        for (std::size_t f = 0; f < features; ++f) s += double(data(i, f)) * truth(f, 0);
        labels(i, 0) = (s > 0) == (rng.uniform(0.f, 1.f) > 0.1f) ? 1.f : -1.f;
    }
    const Var x(data), t(labels);
    Var w = Var::zeros({features, 1}, true);
    const float lambda = 1e-2f;
    const auto loss = [&] { return mean(softplus(-(t * matmul(x, w)))) + sum(w * w) * (lambda / 2); };

    double grad_norm = 0;
    for (int step = 1; step <= 6; ++step) {
        const Tensor g = grad(loss(), w).value();
        grad_norm = std::sqrt(dot({g}, {g}));
        // Conjugate gradients for H d = -g.
        Tensor d(g.shape(), 0.f), r = -g, p = r;
        double rr = dot({r}, {r});
        for (std::size_t i = 0; i < features && rr > 1e-20; ++i) {
            const Tensor hp = hessian_vector_product(loss(), {w}, {Var(p)})[0].value();
            const double alpha = rr / dot({p}, {hp});
            d += static_cast<float>(alpha) * p;
            r -= static_cast<float>(alpha) * hp;
            const double rr_next = dot({r}, {r});
            p = r + static_cast<float>(rr_next / rr) * p;
            rr = rr_next;
        }
        w.mutable_value() += d;
        std::printf("Newton step %d: loss %.6f, |gradient| before the step %.2e\n", step, loss().item(), grad_norm);
    }
    const Tensor g = grad(loss(), w).value();
    grad_norm = std::sqrt(dot({g}, {g}));
    std::printf("after 6 Newton steps: |gradient| %.2e\n", grad_norm);
    return grad_norm < 1e-5;  // quadratic convergence: float rounding is the limit
}

}  // namespace

int main() {
    const bool mlp = check_mlp();
    const bool newton = newton_logistic_regression();
    if (!mlp) std::puts("FAILED: Hessian-vector products differ from finite differences of the gradient");
    if (!newton) std::puts("FAILED: Newton's method did not converge");
    return mlp && newton ? 0 : 1;
}
