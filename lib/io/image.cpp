#include <xgrad/io/image.hpp>

#include <xgrad/io/atomic_file.hpp>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <stdexcept>

#include <stb/stb_easy_font.h>
#include <stb/stb_image_write.h>

namespace xgrad {
namespace {

using Rgb = std::array<unsigned char, 3>;

const Rgb kBlack{0, 0, 0}, kGrid{228, 228, 228}, kReference{110, 110, 110};

// stb_image_write's own file output ignores write errors (a full disk would
// pass silently), so encode in memory and write the file atomically.
void write_png(const std::string& path, std::size_t width, std::size_t height, int channels,
               const std::vector<unsigned char>& pixels) {
    if (width > INT_MAX / 4 / static_cast<std::size_t>(channels) || height > INT_MAX / 4)
        throw std::invalid_argument("xgrad: the image for '" + path + "' is too large for PNG output");
    std::string png;
    auto append = [](void* context, void* data, int size) {
        static_cast<std::string*>(context)->append(static_cast<const char*>(data), static_cast<std::size_t>(size));
    };
    const int w = static_cast<int>(width), h = static_cast<int>(height);
    if (!stbi_write_png_to_func(append, &png, w, h, channels, pixels.data(), w * channels))
        throw std::runtime_error("xgrad: cannot encode the PNG for '" + path + "'");
    write_file_atomically(path, {png});
}

// stb_easy_font indexes its glyph table by (c - 32) without a check.
std::string printable(std::string text) {
    for (char& c : text)
        if (c < 32 || c > 126) c = '?';
    return text;
}

// An RGB image to draw on; whatever falls outside it is clipped.
class Canvas {
public:
    // stb_easy_font's capital letters and digits are 7 units tall.
    static constexpr int kGlyphHeight = 7;

    Canvas(int width, int height) : width_(width), height_(height), pixels_(std::size_t(width) * height * 3, 255) {}

    void fill(int x0, int y0, int x1, int y1, const Rgb& colour) {
        for (int y = std::max(y0, 0); y < std::min(y1, height_); ++y)
            for (int x = std::max(x0, 0); x < std::min(x1, width_); ++x)
                std::memcpy(&pixels_[(std::size_t(y) * width_ + x) * 3], colour.data(), 3);
    }

    // Bresenham with a square pen of `thickness` pixels; `dash` > 0 draws
    // dash pixels on, dash pixels off.
    void line(int x0, int y0, int x1, int y1, const Rgb& colour, int thickness, int dash = 0) {
        const int dx = std::abs(x1 - x0), dy = -std::abs(y1 - y0), sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1;
        const int offset = (thickness - 1) / 2;
        int err = dx + dy;
        for (int i = 0;; ++i) {
            if (dash == 0 || (i / dash) % 2 == 0)
                fill(x0 - offset, y0 - offset, x0 - offset + thickness, y0 - offset + thickness, colour);
            if (x0 == x1 && y0 == y1) break;
            const int e2 = 2 * err;
            if (e2 >= dy) err += dy, x0 += sx;
            if (e2 <= dx) err += dx, y0 += sy;
        }
    }

    static int text_width(const std::string& text, int scale) {
        std::string t = printable(text);
        return stb_easy_font_width(t.data()) * scale;
    }

    // (x, y) is the top-left corner of the text.
    void text(int x, int y, const std::string& text, const Rgb& colour, int scale) {
        std::string t = printable(text);
        std::vector<char> quads(t.size() * 1024 + 64);  // the header estimates ~270 bytes a glyph
        const int n = stb_easy_font_print(0, 0, t.data(), nullptr, quads.data(), static_cast<int>(quads.size()));
        for (int q = 0; q < n; ++q) {
            // Four 16-byte vertices (x, y, z, rgba); vertex 0 is the top-left
            // corner of the axis-aligned quad, vertex 2 the bottom-right one.
            float top_left[2], bottom_right[2];
            std::memcpy(top_left, &quads[std::size_t(q) * 64], sizeof top_left);
            std::memcpy(bottom_right, &quads[std::size_t(q) * 64 + 32], sizeof bottom_right);
            fill(x + static_cast<int>(std::lround(top_left[0])) * scale, y + static_cast<int>(std::lround(top_left[1])) * scale,
                 x + static_cast<int>(std::lround(bottom_right[0])) * scale,
                 y + static_cast<int>(std::lround(bottom_right[1])) * scale, colour);
        }
    }

    const std::vector<unsigned char>& pixels() const { return pixels_; }

private:
    int width_, height_;
    std::vector<unsigned char> pixels_;
};

struct Range {
    double lo = std::numeric_limits<double>::infinity(), hi = -std::numeric_limits<double>::infinity();

    void add(float v) {
        if (!std::isfinite(v)) return;
        lo = std::min(lo, double(v));
        hi = std::max(hi, double(v));
    }
    // The range with a 5% margin each side; one value alone gets +-10% of
    // itself (+-1 around 0), and no value at all [0, 1].
    Range padded() const {
        if (lo > hi) return {0, 1};
        const double margin = hi > lo ? 0.05 * (hi - lo) : (lo != 0 ? 0.1 * std::fabs(lo) : 1.);
        return {lo - margin, hi + margin};
    }
};

struct Ticks {
    std::vector<double> values;
    std::vector<std::string> labels;
};

// About `target` round values (1, 2 or 5 times a power of ten apart) inside
// the range, labelled with just enough decimals for the step.
Ticks make_ticks(const Range& range, int target) {
    const double raw = (range.hi - range.lo) / std::max(target, 1);
    const double magnitude = std::pow(10., std::floor(std::log10(raw)));
    const double norm = raw / magnitude;
    const double step = (norm < 1.5 ? 1 : norm < 3.5 ? 2 : norm < 7.5 ? 5 : 10) * magnitude;
    const int decimals = std::max(0, -static_cast<int>(std::floor(std::log10(step) + 1e-9)));
    Ticks ticks;
    for (double k = std::ceil(range.lo / step); k * step <= range.hi; ++k) {
        const double value = k == 0 ? 0. : k * step;  // no "-0"
        char label[32];
        if (decimals > 6 || std::fabs(value) >= 1e7)
            std::snprintf(label, sizeof label, "%.3g", value);
        else
            std::snprintf(label, sizeof label, "%.*f", decimals, value);
        ticks.values.push_back(value);
        ticks.labels.emplace_back(label);
    }
    return ticks;
}

// Linear map from data values onto a pixel span.
struct Axis {
    Range range;
    double from, to;  // pixels of range.lo and range.hi
    int operator()(double v) const {
        return static_cast<int>(std::lround(from + (v - range.lo) / (range.hi - range.lo) * (to - from)));
    }
};

// Sizes in pixels, all scaled up together on large plots.
struct PlotSizes {
    explicit PlotSizes(int factor)
        : scale(factor),
          glyph(Canvas::kGlyphHeight * factor),
          gap(4 * factor),
          tick_length(3 * factor),
          swatch(12 * factor),
          entry_gap(10 * factor) {}
    int scale, glyph, gap, tick_length, swatch, entry_gap;
};

// Legend entries flow left to right under the title, wrapping at the image width.
struct Legend {
    std::vector<std::vector<std::size_t>> rows = std::vector<std::vector<std::size_t>>(1);  // series indices
    std::vector<int> widths = std::vector<int>(1, 0);
};

Legend layout_legend(const std::vector<PlotSeries>& series, int width, const PlotSizes& z) {
    Legend legend;
    for (std::size_t i = 0; i < series.size(); ++i) {
        const int w = z.swatch + z.gap + Canvas::text_width(series[i].label, z.scale);
        if (!legend.rows.back().empty() && legend.widths.back() + z.entry_gap + w > width - 2 * z.gap) {
            legend.rows.emplace_back();
            legend.widths.push_back(0);
        }
        legend.widths.back() += (legend.rows.back().empty() ? 0 : z.entry_gap) + w;
        legend.rows.back().push_back(i);
    }
    return legend;
}

// The series' common length n, after checking the arguments of write_line_plot.
std::size_t check_plot(const std::string& path, const std::vector<PlotSeries>& series, const PlotOptions& options) {
    if (series.empty()) throw std::invalid_argument("xgrad: write_line_plot: no series to plot into '" + path + "'");
    const std::size_t n = options.x.empty() ? series[0].values.size() : options.x.size();
    for (const auto& s : series)
        if (s.values.size() != n)
            throw std::invalid_argument(
                "xgrad: write_line_plot: series '" + s.label + "' has " + std::to_string(s.values.size()) + " values, but " +
                (options.x.empty() ? "series '" + series[0].label + "' has " : std::string("x has ")) + std::to_string(n));
    if (options.width < 240 || options.height < 160 || options.width > 20000 || options.height > 20000)
        throw std::invalid_argument("xgrad: write_line_plot: a plot of " + std::to_string(options.width) + "x" +
                                    std::to_string(options.height) + " pixels is outside 240x160 .. 20000x20000");
    return n;
}

float x_value(const PlotOptions& options, std::size_t i) { return options.x.empty() ? static_cast<float>(i) : options.x[i]; }

// The plot's frame in pixels, its ticks and the maps from data onto it.
struct PlotArea {
    int left, right, top, bottom;
    Ticks x_ticks, y_ticks;
    Axis to_x, to_y;
};

// The frame between `top` and `bottom`, as wide as the y tick labels leave
// room for; the ranges those of the data, padded.
PlotArea layout_area(const std::vector<PlotSeries>& series, const PlotOptions& options, std::size_t n, int top, int bottom,
                     const PlotSizes& z) {
    Range x_data, y_data;
    for (std::size_t i = 0; i < n; ++i) x_data.add(x_value(options, i));
    for (const auto& s : series)
        for (float v : s.values) y_data.add(v);
    for (float v : options.horizontal_lines) y_data.add(v);
    const Range y_range = y_data.padded(), x_range = x_data.padded();

    Ticks y_ticks = make_ticks(y_range, std::max(2, (bottom - top) / (30 * z.scale)));
    int label_width = 0;
    for (const auto& label : y_ticks.labels) label_width = std::max(label_width, Canvas::text_width(label, z.scale));
    const int left = z.gap + label_width + z.gap + z.tick_length, right = static_cast<int>(options.width) - 1 - 8 * z.scale;
    Ticks x_ticks = make_ticks(x_range, std::max(2, (right - left) / (60 * z.scale)));
    return {left,
            right,
            top,
            bottom,
            std::move(x_ticks),
            std::move(y_ticks),
            Axis{x_range, double(left), double(right)},
            Axis{y_range, double(bottom), double(top)}};
}

// Each series as a line in its colour, broken where a value is not finite.
void draw_series(Canvas& canvas, const std::vector<PlotSeries>& series, const PlotOptions& options, std::size_t n,
                 const PlotArea& a) {
    const int pen = 2;
    for (std::size_t s = 0; s < series.size(); ++s) {
        const Rgb colour = plot_colour(s);
        const auto& values = series[s].values;
        auto finite = [&](std::size_t i) { return std::isfinite(x_value(options, i)) && std::isfinite(values[i]); };
        for (std::size_t i = 0; i < n; ++i) {
            if (!finite(i)) continue;
            const int px = a.to_x(x_value(options, i)), py = a.to_y(values[i]);
            if (i > 0 && finite(i - 1))
                canvas.line(a.to_x(x_value(options, i - 1)), a.to_y(values[i - 1]), px, py, colour, pen);
            else if (i + 1 == n || !finite(i + 1))  // a point between gaps would otherwise be invisible
                canvas.fill(px - pen, py - pen, px + pen + 1, py + pen + 1, colour);
        }
    }
}

// The frame, the ticks with their labels and the x axis label.
void draw_axes(Canvas& canvas, const PlotArea& a, const std::string& x_label, int width, const PlotSizes& z) {
    canvas.line(a.left, a.top, a.right, a.top, kBlack, 1);
    canvas.line(a.left, a.bottom, a.right, a.bottom, kBlack, 1);
    canvas.line(a.left, a.top, a.left, a.bottom, kBlack, 1);
    canvas.line(a.right, a.top, a.right, a.bottom, kBlack, 1);
    for (std::size_t i = 0; i < a.y_ticks.values.size(); ++i) {
        const int y = a.to_y(a.y_ticks.values[i]);
        canvas.line(a.left - z.tick_length, y, a.left, y, kBlack, 1);
        const int w = Canvas::text_width(a.y_ticks.labels[i], z.scale);
        canvas.text(a.left - z.tick_length - z.gap - w, y - z.glyph / 2, a.y_ticks.labels[i], kBlack, z.scale);
    }
    for (std::size_t i = 0; i < a.x_ticks.values.size(); ++i) {
        const int x = a.to_x(a.x_ticks.values[i]);
        canvas.line(x, a.bottom, x, a.bottom + z.tick_length, kBlack, 1);
        const int w = Canvas::text_width(a.x_ticks.labels[i], z.scale);
        // Centred under the tick, but never cut off by the image's right edge.
        canvas.text(std::min(x - w / 2, width - w), a.bottom + z.tick_length + z.gap, a.x_ticks.labels[i], kBlack, z.scale);
    }
    if (!x_label.empty()) {
        const int w = Canvas::text_width(x_label, z.scale);
        canvas.text((a.left + a.right - w) / 2, a.bottom + z.tick_length + 2 * z.gap + z.glyph, x_label, kBlack, z.scale);
    }
}

void draw_legend(Canvas& canvas, const Legend& legend, const std::vector<PlotSeries>& series, int width, int top, int line_height,
                 const PlotSizes& z) {
    for (std::size_t row = 0; row < legend.rows.size(); ++row) {
        int x = (width - legend.widths[row]) / 2;
        const int y = top + static_cast<int>(row) * line_height + z.gap;
        for (std::size_t i : legend.rows[row]) {
            canvas.fill(x, y + z.glyph / 2 - z.scale, x + z.swatch, y + z.glyph / 2 + z.scale + 1, plot_colour(i));
            canvas.text(x + z.swatch + z.gap, y, series[i].label, kBlack, z.scale);
            x += z.swatch + z.gap + Canvas::text_width(series[i].label, z.scale) + z.entry_gap;
        }
    }
}
}  // namespace

unsigned char pixel_byte(float value) {
    if (std::isnan(value)) return 0;
    return static_cast<unsigned char>(std::lround(std::clamp(value, 0.f, 1.f) * 255.f));
}

void write_image_grid(const std::string& path, const Tensor& images, std::size_t height, std::size_t width, std::size_t columns,
                      std::size_t padding, std::size_t scale) {
    const std::size_t n = images.shape()[0];
    if (images.shape()[1] != height * width)
        throw ShapeError("xgrad: write_image_grid: images " + shape_string(images) + " do not have " + std::to_string(height) +
                         "x" + std::to_string(width) + " = " + std::to_string(height * width) + " pixels per row");
    if (n == 0 || columns == 0 || height == 0 || width == 0)
        throw std::invalid_argument("xgrad: write_image_grid: nothing to draw for '" + path + "' (" + std::to_string(n) +
                                    " images, " + std::to_string(columns) + " columns, " + std::to_string(height) + "x" +
                                    std::to_string(width) + " tiles)");
    if (scale < 1 || scale > 16)
        throw std::invalid_argument("xgrad: write_image_grid: scale " + std::to_string(scale) + " for '" + path +
                                    "' is outside 1..16");
    const std::size_t rows = (n + columns - 1) / columns;
    const std::size_t tile_height = scale * height, tile_width = scale * width;
    const std::size_t grid_width = columns * (tile_width + padding) + padding;
    const std::size_t grid_height = rows * (tile_height + padding) + padding;
    std::vector<unsigned char> pixels(grid_width * grid_height, 128);
    for (std::size_t i = 0; i < n; ++i) {
        const std::size_t top = padding + i / columns * (tile_height + padding);
        const std::size_t left = padding + i % columns * (tile_width + padding);
        for (std::size_t y = 0; y < tile_height; ++y)
            for (std::size_t x = 0; x < tile_width; ++x)
                pixels[(top + y) * grid_width + left + x] = pixel_byte(images(i, y / scale * width + x / scale));
    }
    write_png(path, grid_width, grid_height, 1, pixels);
}

std::array<unsigned char, 3> plot_colour(std::size_t index) {
    // Matplotlib's "tab10": distinct, and readable on white.
    static const Rgb palette[] = {{31, 119, 180}, {255, 127, 14},  {44, 160, 44},   {214, 39, 40},  {148, 103, 189},
                                  {140, 86, 75},  {227, 119, 194}, {127, 127, 127}, {188, 189, 34}, {23, 190, 207}};
    return palette[index % std::size(palette)];
}

void write_line_plot(const std::string& path, const std::vector<PlotSeries>& series, const PlotOptions& options) {
    const std::size_t n = check_plot(path, series, options);
    const int width = static_cast<int>(options.width), height = static_cast<int>(options.height);
    const PlotSizes z(width >= 600 && height >= 400 ? 2 : 1);

    // From the top: the title, the legend, the plot, the x tick labels and the x label.
    const Legend legend = layout_legend(series, width, z);
    const int line_height = z.glyph + 2 * z.gap;
    const int title_top = z.gap, legend_top = title_top + line_height;
    const int plot_top = legend_top + static_cast<int>(legend.rows.size()) * line_height + z.gap;
    const int plot_bottom =
        height - 1 - (z.tick_length + z.gap + z.glyph + z.gap) - (options.x_label.empty() ? 0 : z.glyph + z.gap);
    const PlotArea a = layout_area(series, options, n, plot_top, plot_bottom, z);

    Canvas canvas(width, height);
    for (double v : a.y_ticks.values) canvas.line(a.left, a.to_y(v), a.right, a.to_y(v), kGrid, 1);
    for (double v : a.x_ticks.values) canvas.line(a.to_x(v), a.top, a.to_x(v), a.bottom, kGrid, 1);
    for (float v : options.horizontal_lines)
        if (std::isfinite(v)) canvas.line(a.left, a.to_y(v), a.right, a.to_y(v), kReference, 1, 3 * z.scale);
    draw_series(canvas, series, options, n, a);
    // The frame and labels go on top, so data never hides them.
    draw_axes(canvas, a, options.x_label, width, z);
    canvas.text((width - Canvas::text_width(options.title, z.scale)) / 2, title_top + z.gap, options.title, kBlack, z.scale);
    draw_legend(canvas, legend, series, width, legend_top, line_height, z);
    write_png(path, options.width, options.height, 3, canvas.pixels());
}

}  // namespace xgrad
