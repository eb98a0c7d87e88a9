// PNG output for training runs: a grid of generated samples, and line plots
// of the logged curves (losses, D(x), D(G(z))). Both write through
// stb_image_write; text is drawn with stb_easy_font, so nothing beyond
// libstb is needed.
#pragma once

#include <array>
#include <cstddef>
#include <string>
#include <vector>

#include <xgrad/core/tensor.hpp>

namespace xgrad {

// A value in [0,1] as an 8-bit pixel: round(255 x), clamped, NaN -> 0. The
// one conversion of PNG grids and of generated IDX samples.
unsigned char pixel_byte(float value);

// Writes `images` (n, height*width; row-major pixels, values in [0,1],
// clamped, NaN -> 0, see pixel_byte) as one 8-bit grayscale PNG: tiles in row-major order,
// `columns` per grid row, ceil(n/columns) grid rows. Each image pixel is drawn
// as a `scale` x `scale` square (nearest neighbour: a 28 x 28 digit at scale 1
// is a few millimetres on a screen). Every tile is framed by `padding` pixels
// of mid-grey (128), so the PNG is
//   (columns*(scale*width+padding) + padding) x (rows*(scale*height+padding) + padding)
// pixels; cells after the last image are left grey.
// Throws ShapeError when images.shape()[1] != height*width, std::invalid_argument
// for no images, zero columns, a zero tile size or a scale outside 1..16, and
// std::runtime_error naming the path when the file cannot be written.
void write_image_grid(const std::string& path, const Tensor& images, std::size_t height, std::size_t width, std::size_t columns,
                      std::size_t padding = 2, std::size_t scale = 1);

struct PlotSeries {
    std::string label;
    std::vector<float> values;
};

struct PlotOptions {
    std::string title;
    std::string x_label;
    std::size_t width = 800, height = 500;  // pixels; at least 240 x 160
    std::vector<float> x;                   // shared x values; empty = 0..n-1
    std::vector<float> horizontal_lines;    // reference levels drawn dashed, e.g. 0.5 and log 4
};

// Writes an RGB PNG: title, a legend (one colour per series), axes with
// numeric ticks and light grid lines. NaN and Inf points are skipped, leaving
// gaps; an isolated finite point is drawn as a dot. The axis ranges fit the
// finite data (the y range also includes the reference levels, which are only
// useful in view) with a margin; a constant series gets a range around it.
// Throws std::invalid_argument for an empty series list, a series whose length
// differs from x (or from the first series when x is empty; the message names
// it) and a too small size, and std::runtime_error naming the path when the
// file cannot be written.
void write_line_plot(const std::string& path, const std::vector<PlotSeries>& series, const PlotOptions& options);

// The RGB colour of series `index` in write_line_plot (10 distinct colours,
// then repeating), for callers that refer to a curve by its colour.
std::array<unsigned char, 3> plot_colour(std::size_t index);

}  // namespace xgrad
