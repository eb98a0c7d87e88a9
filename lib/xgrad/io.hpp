// xgrad_io: atomic file writes, archive files, safetensors files, IDX data sets, PNG images and plots,
// the progress line.
#pragma once

#include <xgrad/io/archive_file.hpp>
#include <xgrad/io/atomic_file.hpp>
#include <xgrad/io/idx.hpp>
#include <xgrad/io/image.hpp>
#include <xgrad/io/progress.hpp>
#include <xgrad/io/safetensors.hpp>
