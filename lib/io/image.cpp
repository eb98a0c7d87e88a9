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
    const int width = static_cast<int>(options.width), height = static_cast<int>(options.height);
    const int scale = width >= 600 && height >= 400 ? 2 : 1;
    const int glyph = Canvas::kGlyphHeight * scale, gap = 4 * scale, tick_length = 3 * scale;
    auto x_at = [&](std::size_t i) { return options.x.empty() ? static_cast<float>(i) : options.x[i]; };

    // Legend entries flow left to right under the title, wrapping at the image width.
    const int swatch = 12 * scale, entry_gap = 10 * scale;
    std::vector<std::vector<std::size_t>> legend_rows(1);
    std::vector<int> legend_widths(1, 0);
    for (std::size_t i = 0; i < series.size(); ++i) {
        const int w = swatch + gap + Canvas::text_width(series[i].label, scale);
        if (!legend_rows.back().empty() && legend_widths.back() + entry_gap + w > width - 2 * gap) {
            legend_rows.emplace_back();
            legend_widths.push_back(0);
        }
        legend_widths.back() += (legend_rows.back().empty() ? 0 : entry_gap) + w;
        legend_rows.back().push_back(i);
    }
    const int line_height = glyph + 2 * gap;
    const int title_top = gap, legend_top = title_top + line_height;
    const int plot_top = legend_top + static_cast<int>(legend_rows.size()) * line_height + gap;
    const int plot_bottom = height - 1 - (tick_length + gap + glyph + gap) - (options.x_label.empty() ? 0 : glyph + gap);

    Range x_data, y_data;
    for (std::size_t i = 0; i < n; ++i) x_data.add(x_at(i));
    for (const auto& s : series)
        for (float v : s.values) y_data.add(v);
    for (float v : options.horizontal_lines) y_data.add(v);
    const Range y_range = y_data.padded(), x_range = x_data.padded();

    const Ticks y_ticks = make_ticks(y_range, std::max(2, (plot_bottom - plot_top) / (30 * scale)));
    int label_width = 0;
    for (const auto& label : y_ticks.labels) label_width = std::max(label_width, Canvas::text_width(label, scale));
    const int plot_left = gap + label_width + gap + tick_length, plot_right = width - 1 - 8 * scale;
    const Ticks x_ticks = make_ticks(x_range, std::max(2, (plot_right - plot_left) / (60 * scale)));
    const Axis to_x{x_range, double(plot_left), double(plot_right)};
    const Axis to_y{y_range, double(plot_bottom), double(plot_top)};

    Canvas canvas(width, height);
    for (double v : y_ticks.values) canvas.line(plot_left, to_y(v), plot_right, to_y(v), kGrid, 1);
    for (double v : x_ticks.values) canvas.line(to_x(v), plot_top, to_x(v), plot_bottom, kGrid, 1);
    for (float v : options.horizontal_lines)
        if (std::isfinite(v)) canvas.line(plot_left, to_y(v), plot_right, to_y(v), kReference, 1, 3 * scale);

    const int pen = 2;
    for (std::size_t s = 0; s < series.size(); ++s) {
        const Rgb colour = plot_colour(s);
        const auto& values = series[s].values;
        auto finite = [&](std::size_t i) { return std::isfinite(x_at(i)) && std::isfinite(values[i]); };
        for (std::size_t i = 0; i < n; ++i) {
            if (!finite(i)) continue;
            const int px = to_x(x_at(i)), py = to_y(values[i]);
            if (i > 0 && finite(i - 1))
                canvas.line(to_x(x_at(i - 1)), to_y(values[i - 1]), px, py, colour, pen);
            else if (i + 1 == n || !finite(i + 1))  // a point between gaps would otherwise be invisible
                canvas.fill(px - pen, py - pen, px + pen + 1, py + pen + 1, colour);
        }
    }

    // The frame and labels go on top, so data never hides them.
    canvas.line(plot_left, plot_top, plot_right, plot_top, kBlack, 1);
    canvas.line(plot_left, plot_bottom, plot_right, plot_bottom, kBlack, 1);
    canvas.line(plot_left, plot_top, plot_left, plot_bottom, kBlack, 1);
    canvas.line(plot_right, plot_top, plot_right, plot_bottom, kBlack, 1);
    for (std::size_t i = 0; i < y_ticks.values.size(); ++i) {
        const int y = to_y(y_ticks.values[i]);
        canvas.line(plot_left - tick_length, y, plot_left, y, kBlack, 1);
        const int w = Canvas::text_width(y_ticks.labels[i], scale);
        canvas.text(plot_left - tick_length - gap - w, y - glyph / 2, y_ticks.labels[i], kBlack, scale);
    }
    for (std::size_t i = 0; i < x_ticks.values.size(); ++i) {
        const int x = to_x(x_ticks.values[i]);
        canvas.line(x, plot_bottom, x, plot_bottom + tick_length, kBlack, 1);
        const int w = Canvas::text_width(x_ticks.labels[i], scale);
        // Centred under the tick, but never cut off by the image's right edge.
        canvas.text(std::min(x - w / 2, width - w), plot_bottom + tick_length + gap, x_ticks.labels[i], kBlack, scale);
    }
    if (!options.x_label.empty()) {
        const int w = Canvas::text_width(options.x_label, scale);
        canvas.text((plot_left + plot_right - w) / 2, plot_bottom + tick_length + 2 * gap + glyph, options.x_label, kBlack,
                    scale);
    }
    canvas.text((width - Canvas::text_width(options.title, scale)) / 2, title_top + gap, options.title, kBlack, scale);
    for (std::size_t row = 0; row < legend_rows.size(); ++row) {
        int x = (width - legend_widths[row]) / 2;
        const int y = legend_top + static_cast<int>(row) * line_height + gap;
        for (std::size_t i : legend_rows[row]) {
            canvas.fill(x, y + glyph / 2 - scale, x + swatch, y + glyph / 2 + scale + 1, plot_colour(i));
            canvas.text(x + swatch + gap, y, series[i].label, kBlack, scale);
            x += swatch + gap + Canvas::text_width(series[i].label, scale) + entry_gap;
        }
    }
    write_png(path, options.width, options.height, 3, canvas.pixels());
}

}  // namespace xgrad
