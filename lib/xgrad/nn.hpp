// Modules: layers and their composition.
#pragma once

#include <xgrad/nn/activation.hpp>
#include <xgrad/nn/augment.hpp>
#include <xgrad/nn/conv.hpp>
#include <xgrad/nn/ema.hpp>
#include <xgrad/nn/init.hpp>
#include <xgrad/nn/linear.hpp>
#include <xgrad/nn/minibatch_stddev.hpp>
#include <xgrad/nn/module.hpp>
#include <xgrad/nn/norm.hpp>
#include <xgrad/nn/spectral_norm.hpp>
#include <xgrad/nn/weighted_layer.hpp>
