// Everything of the xgrad library (tensors, autograd, ops, modules,
// optimizers, gradient checking, threads); files and the terminal are in
// <xgrad/io.hpp> (the xgrad_io library).
#pragma once

#include <xgrad/check/gradcheck.hpp>
#include <xgrad/core/archive.hpp>
#include <xgrad/core/kernels.hpp>
#include <xgrad/core/op.hpp>
#include <xgrad/core/parallel.hpp>
#include <xgrad/core/random.hpp>
#include <xgrad/core/tensor.hpp>
#include <xgrad/core/var.hpp>
#include <xgrad/nn.hpp>
#include <xgrad/ops.hpp>
#include <xgrad/optim.hpp>
