#include <xgrad/distributed.hpp>

#include <stdexcept>
#include <utility>

namespace xgrad {

DataParallel::DataParallel(std::size_t global_batch) : sampler_(global_batch, 0, 1) {}

DataParallel::DataParallel(std::size_t global_batch, const Distributed& distributed, ReduceOrder order)
    : distributed_(&distributed), order_(order), sampler_(global_batch, distributed) {}

void DataParallel::broadcast(const Module& module) const {
    if (distributed_) distributed_->broadcast(module);
}

const Var& DataParallel::local_rows(const Var& global) {
    if (ranks() == 1) return global;
    // Keyed by the global batch's value, which lives as long as its Var.
    const Tensor* key = &global.value();
    auto found = rows_.begin();
    while (found != rows_.end() && found->first != key) ++found;
    if (found == rows_.end()) {
        Shape shape = global.shape();
        if (shape.empty()) throw ShapeError("xgrad::DataParallel::local_rows: a scalar has no rows");
        shape[0] = local_batch();
        found = rows_.emplace(rows_.end(), key, Var(Tensor(shape, 0.f)));
    }
    sampler_.take_rows(global.value(), found->second.mutable_value());
    return found->second;
}

DataParallel::Gradients DataParallel::gradients(std::vector<Var> parameters, std::size_t statistics) const {
    Gradients g;
    if (ranks() > 1) {
        g.allreduce_ = std::make_unique<GradientAllreduce>(*distributed_, std::move(parameters), order_, statistics);
        g.ranks_ = static_cast<float>(ranks());
    }
    return g;
}

void DataParallel::average_buffers() const {
    if (ranks() > 1) distributed_->average(buffers_);
}

void DataParallel::Gradients::average() {
    if (allreduce_) allreduce_->average();
}

bool DataParallel::Gradients::average(bool flag, float* means, std::size_t n) {
    if (!allreduce_) return flag;
    const bool any = allreduce_->average(flag, means, n);
    for (std::size_t i = 0; i < n; ++i) means[i] /= ranks_;
    return any;
}

double DataParallel::Gradients::seconds() const { return allreduce_ ? allreduce_->total_seconds() : 0.0; }
double DataParallel::Gradients::mpi_seconds() const { return allreduce_ ? allreduce_->mpi_seconds() : 0.0; }

}  // namespace xgrad
