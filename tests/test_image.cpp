// PNG output is checked by reading the files back (png_file.hpp); the
// progress line by drawing into a string stream.
#include <doctest/doctest.h>

#include <xgrad/io/image.hpp>
#include <xgrad/io/progress.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <sstream>

#include <unistd.h>

#include "png_file.hpp"

using namespace xgrad;

namespace {

using test::Png;
using test::read_png;

const float kNaN = std::numeric_limits<float>::quiet_NaN();

// A unique temporary file name, removed when the test ends.
class TempPath {
public:
    TempPath() {
        static int counter = 0;
        path_ = (std::filesystem::temp_directory_path() /
                 ("xgrad_test_image_" + std::to_string(getpid()) + "_" + std::to_string(counter++) + ".png"))
                    .string();
    }
    ~TempPath() { std::filesystem::remove(path_); }
    const std::string& str() const { return path_; }

private:
    std::string path_;
};

Png plot(const std::vector<PlotSeries>& series, const PlotOptions& options) {
    TempPath path;
    write_line_plot(path.str(), series, options);
    return read_png(path.str());
}

// Pixels where two same-sized plots differ, as (x, y).
std::vector<std::pair<int, int>> differences(const Png& a, const Png& b) {
    REQUIRE(a.width == b.width);
    REQUIRE(a.height == b.height);
    std::vector<std::pair<int, int>> out;
    for (int y = 0; y < a.height; ++y)
        for (int x = 0; x < a.width; ++x)
            if (!std::equal(a.at(x, y), a.at(x, y) + a.channels, b.at(x, y))) out.emplace_back(x, y);
    return out;
}

const std::array<unsigned char, 3> kWhite{255, 255, 255};

}  // namespace

TEST_CASE("image grid: tiles in row-major order framed by grey padding") {
    // 5 tiles of 3x2 in 2 columns with padding 1: 3 grid rows, the last half empty.
    const std::size_t h = 3, w = 2, pad = 1;
    Tensor images = Tensor::from_shape({5, h * w});
    for (std::size_t i = 0; i < 5; ++i)
        for (std::size_t j = 0; j < h * w; ++j) images(i, j) = float(i * h * w + j + 1) / 255.f;  // byte i*6+j+1
    TempPath path;
    write_image_grid(path.str(), images, h, w, 2, pad);
    const Png png = read_png(path.str());
    REQUIRE(png.channels == 1);
    CHECK(png.width == 2 * (2 + 1) + 1);
    CHECK(png.height == 3 * (3 + 1) + 1);

    std::vector<bool> in_tile(std::size_t(png.width) * png.height, false);
    for (std::size_t i = 0; i < 5; ++i)
        for (std::size_t y = 0; y < h; ++y)
            for (std::size_t x = 0; x < w; ++x) {
                const int px = int(pad + i % 2 * (w + pad) + x), py = int(pad + i / 2 * (h + pad) + y);
                CHECK(int(*png.at(px, py)) == int(i * h * w + y * w + x + 1));
                in_tile[std::size_t(py) * png.width + px] = true;
            }
    int grey = 0;
    for (int y = 0; y < png.height; ++y)
        for (int x = 0; x < png.width; ++x)
            if (!in_tile[std::size_t(y) * png.width + x]) grey += *png.at(x, y) == 128;
    CHECK(grey == png.width * png.height - 5 * int(h * w));  // borders and the empty cell
}

TEST_CASE("image grid: the default padding is 2") {
    TempPath path;
    write_image_grid(path.str(), Tensor({3, 28 * 28}, 0.f), 28, 28, 2);
    const Png png = read_png(path.str());
    CHECK(png.width == 2 * 30 + 2);
    CHECK(png.height == 2 * 30 + 2);
    CHECK(int(*png.at(0, 0)) == 128);
    CHECK(int(*png.at(2, 2)) == 0);
}

TEST_CASE("image grid: scale draws each pixel as a square; the padding stays thin") {
    // Two 2x2 tiles side by side at scale 3, padding 1: 2*(6+1)+1 by 6+1+1.
    Tensor images = {{0.f, 1.f, 0.5f, 0.25f}, {1.f, 0.f, 0.25f, 0.5f}};
    TempPath path;
    write_image_grid(path.str(), images, 2, 2, 2, 1, 3);
    const Png png = read_png(path.str());
    REQUIRE(png.width == 2 * (2 * 3 + 1) + 1);
    REQUIRE(png.height == 2 * 3 + 1 + 1);
    for (int tile = 0; tile < 2; ++tile)
        for (int y = 0; y < 6; ++y)
            for (int x = 0; x < 6; ++x) {
                const int expected = pixel_byte(images(std::size_t(tile), std::size_t(y / 3 * 2 + x / 3)));
                CHECK(int(*png.at(1 + tile * 7 + x, 1 + y)) == expected);
            }
    CHECK(int(*png.at(7, 3)) == 128);  // the gap between the tiles
    CHECK_THROWS_WITH_AS(write_image_grid(path.str(), images, 2, 2, 2, 1, 0), doctest::Contains("scale 0"),
                         std::invalid_argument);
    CHECK_THROWS_AS(write_image_grid(path.str(), images, 2, 2, 2, 1, 17), std::invalid_argument);
}

TEST_CASE("image grid: values map to bytes, clamped, NaN black") {
    Tensor images = {{0.f, 1.f, 0.5f, -3.f, 7.f, kNaN, 0.25f}};
    TempPath path;
    write_image_grid(path.str(), images, 1, 7, 1, 0);
    const Png png = read_png(path.str());
    REQUIRE(png.width == 7);
    REQUIRE(png.height == 1);
    const std::vector<int> expected = {0, 255, 128, 0, 255, 0, 64};
    for (int x = 0; x < 7; ++x) CHECK(int(*png.at(x, 0)) == expected[std::size_t(x)]);
}

TEST_CASE("image grid: bad shapes and unwritable paths throw") {
    TempPath path;
    CHECK_THROWS_WITH_AS(write_image_grid(path.str(), Tensor::from_shape({4, 10}), 3, 3, 2), doctest::Contains("(4, 10)"),
                         ShapeError);
    CHECK_THROWS_WITH_AS(write_image_grid(path.str(), Tensor::from_shape({4, 10}), 3, 3, 2), doctest::Contains("3x3"),
                         ShapeError);
    CHECK_THROWS_AS(write_image_grid(path.str(), Tensor::from_shape({0, 9}), 3, 3, 2), std::invalid_argument);
    CHECK_THROWS_AS(write_image_grid(path.str(), Tensor::from_shape({1, 9}), 3, 3, 0), std::invalid_argument);
    CHECK_FALSE(std::filesystem::exists(path.str()));

    const std::string missing = (std::filesystem::temp_directory_path() / "xgrad_no_such_dir_4f1c" / "g.png").string();
    CHECK_THROWS_WITH_AS(write_image_grid(missing, Tensor::from_shape({1, 9}), 3, 3, 1), doctest::Contains(missing.c_str()),
                         std::runtime_error);
    // A directory cannot be opened for writing, even by root (unlike a read-only file).
    const std::string directory = std::filesystem::temp_directory_path().string();
    CHECK_THROWS_WITH_AS(write_image_grid(directory, Tensor::from_shape({1, 9}), 3, 3, 1), doctest::Contains(directory.c_str()),
                         std::runtime_error);
}

TEST_CASE("line plot: requested size, RGB, one colour per series, title drawn") {
    PlotOptions options;
    options.width = 640;
    options.height = 400;
    options.x_label = "step";
    const std::vector<PlotSeries> series = {{"rising", {0.f, 1.f, 2.f, 3.f}}, {"falling", {3.f, 2.f, 1.f, 0.f}}};
    const Png untitled = plot(series, options);
    options.title = "Losses";
    const Png titled = plot(series, options);

    CHECK(titled.width == 640);
    CHECK(titled.height == 400);
    CHECK(titled.channels == 3);
    CHECK(titled.count(kWhite) < titled.width * titled.height - 5000);
    CHECK(titled.count(plot_colour(0)) > 100);
    CHECK(titled.count(plot_colour(1)) > 100);
    CHECK(plot_colour(0) != plot_colour(1));

    // The title is the only difference: dark pixels in the top band.
    const auto diff = differences(untitled, titled);
    CHECK(diff.size() > 20);
    for (const auto& [x, y] : diff) {
        CHECK(y < titled.height / 10);
        CHECK(titled.at(x, y)[0] < 100);
    }
}

TEST_CASE("line plot: NaN and Inf leave gaps; isolated points and constant series still show") {
    PlotOptions options;
    options.width = 400;
    options.height = 300;
    const auto blue = plot_colour(0);
    // The data of these plots stays in the lower three quarters; the legend is above.
    const int data_rows = options.height / 4;
    auto middle_has_data = [&](const std::vector<float>& values) {
        const Png png = plot({{"s", values}}, options);
        int left = png.width, right = -1;
        for (int x = 0; x < png.width; ++x)
            if (png.column_has(x, blue, data_rows)) left = std::min(left, x), right = std::max(right, x);
        REQUIRE(right > left);
        return png.column_has((left + right) / 2, blue, data_rows);
    };
    const float inf = std::numeric_limits<float>::infinity();
    CHECK(middle_has_data({1.f, 0.f, 0.f, 0.f, 1.f}));
    CHECK_FALSE(middle_has_data({1.f, 0.f, kNaN, 0.f, 1.f}));
    CHECK_FALSE(middle_has_data({1.f, 0.f, inf, 0.f, 1.f}));

    CHECK(plot({{"dot", {kNaN, kNaN, 0.5f, kNaN, kNaN}}}, options).count(blue, data_rows) > 0);
    CHECK(plot({{"flat", {2.f, 2.f, 2.f}}}, options).count(blue, data_rows) > 100);
    const Png nothing_finite = plot({{"nan", {kNaN, kNaN}}, {"none", {-inf, inf}}}, options);
    CHECK(nothing_finite.count(blue, data_rows) == 0);
    CHECK(nothing_finite.width == 400);
}

TEST_CASE("line plot: reference levels are one dashed row") {
    PlotOptions options;
    options.width = 400;
    options.height = 300;
    const std::vector<PlotSeries> series = {{"s", {0.f, 1.f, 0.f, 1.f}}};
    const Png plain = plot(series, options);
    options.horizontal_lines = {0.5f};
    const Png marked = plot(series, options);
    const auto diff = differences(plain, marked);
    REQUIRE(!diff.empty());
    const int row = diff[0].second;
    int left = marked.width, right = 0;
    for (const auto& [x, y] : diff) {
        CHECK(y == row);
        left = std::min(left, x), right = std::max(right, x);
    }
    CHECK(right - left > marked.width / 2);
    CHECK(int(diff.size()) < (right - left) * 3 / 4);  // gaps between the dashes
}

TEST_CASE("line plot: invalid input throws naming the culprit") {
    TempPath path;
    PlotOptions options;
    CHECK_THROWS_AS(write_line_plot(path.str(), {}, options), std::invalid_argument);
    CHECK_THROWS_WITH_AS(write_line_plot(path.str(), {{"a", {1.f, 2.f}}, {"short one", {1.f}}}, options),
                         doctest::Contains("short one"), std::invalid_argument);
    options.x = {0.f, 1.f, 2.f};
    CHECK_THROWS_WITH_AS(write_line_plot(path.str(), {{"D loss", {1.f, 2.f}}}, options), doctest::Contains("D loss"),
                         std::invalid_argument);
    options.x.clear();
    options.width = 10;
    CHECK_THROWS_AS(write_line_plot(path.str(), {{"a", {1.f}}}, options), std::invalid_argument);
    CHECK_FALSE(std::filesystem::exists(path.str()));

    const std::string missing = (std::filesystem::temp_directory_path() / "xgrad_no_such_dir_4f1c" / "p.png").string();
    CHECK_THROWS_WITH_AS(write_line_plot(missing, {{"a", {1.f}}}, PlotOptions{}), doctest::Contains(missing.c_str()),
                         std::runtime_error);
}

TEST_CASE("line plot: a training-curve example") {
    // Set XGRAD_PLOT_EXAMPLE=/some/file.png to keep the picture and look at it.
    const char* keep = std::getenv("XGRAD_PLOT_EXAMPLE");
    TempPath temp;
    const std::string path = keep ? keep : temp.str();

    std::vector<float> x, d_loss, g_loss;
    std::uint32_t state = 12345;  // a fixed LCG: the same noise on every platform
    auto noise = [&] { return (state = state * 1664525u + 1013904223u) / 4294967296.f - 0.5f; };
    for (int i = 0; i < 200; ++i) {
        x.push_back(float(i * 300));
        d_loss.push_back(1.386f - 0.3f * (1.f - std::exp(-i / 40.f)) + 0.15f * noise());
        g_loss.push_back(0.693f + 0.5f * (1.f - std::exp(-i / 30.f)) + 0.2f * noise());
    }
    d_loss[120] = kNaN;  // a gap, as from a skipped log entry
    PlotOptions options;
    options.title = "GAN losses (example)";
    options.x_label = "step";
    options.x = x;
    options.horizontal_lines = {0.5f, std::log(4.f)};
    write_line_plot(path, {{"D loss", d_loss}, {"G loss", g_loss}}, options);

    const Png png = read_png(path);
    CHECK(png.width == 800);
    CHECK(png.height == 500);
    CHECK(png.count(plot_colour(0)) > 500);
    CHECK(png.count(plot_colour(1)) > 500);
}

TEST_CASE("progress: draws step, total and status when enabled") {
    std::ostringstream out;
    {
        Progress progress(1000, out);
        progress.set_mode(Progress::Mode::redraw);
        progress.update(12, "D 1.23 G 0.71 D(x) 0.52 D(G(z)) 0.47");
    }  // the destructor ends the line
    const std::string text = out.str();
    CHECK(text.front() == '\r');
    CHECK(text.find("  12/1000]") != std::string::npos);
    CHECK(text.find("steps/s ETA ") != std::string::npos);
    CHECK(text.find("D 1.23 G 0.71 D(x) 0.52 D(G(z)) 0.47") != std::string::npos);
    CHECK(text.back() == '\n');
}

TEST_CASE("progress: into a log, a line at every tenth of the total, and the state of an early stop") {
    std::ostringstream out;
    {
        Progress progress(1000, out);
        progress.set_mode(Progress::Mode::lines);
        for (std::size_t step = 1; step <= 1000; ++step) progress.update(step, "s" + std::to_string(step));
    }
    const std::string text = out.str();
    CHECK(text.find('\r') == std::string::npos);
    CHECK(std::count(text.begin(), text.end(), '\n') == 10);  // 100, 200, ..., 1000 (the run takes far less than 30 s)
    CHECK(text.find("[ 100/1000]") == 0);
    CHECK(text.find("[1000/1000]") != std::string::npos);
    CHECK(text.find("s500\n") != std::string::npos);

    std::ostringstream stopped;
    Progress early(1000, stopped);
    early.set_mode(Progress::Mode::lines);
    for (std::size_t step = 1; step <= 123; ++step) early.update(step, "x");
    early.finish();
    early.finish();
    const std::string log = stopped.str();
    CHECK(std::count(log.begin(), log.end(), '\n') == 2);  // step 100, and 123 at the stop
    CHECK(log.find("[ 123/1000]") != std::string::npos);
}

TEST_CASE("progress: a time budget shows the time used, bounds the ETA and counts towards the tenths") {
    std::ostringstream out;
    {
        Progress progress(1000, out);
        progress.set_mode(Progress::Mode::lines);
        progress.set_time_budget(1e-9);  // spent before the first update
        for (std::size_t step = 1; step <= 5; ++step) progress.update(step, "s");
    }
    const std::string text = out.str();
    // All ten tenths of the run are done at step 1: its line, then the state at the stop.
    CHECK(std::count(text.begin(), text.end(), '\n') == 2);
    CHECK(text.find("[   1/1000]") == 0);
    CHECK(text.find("steps/s time 00:00/00:00 ETA 00:00 s\n") != std::string::npos);
    CHECK(text.find("[   5/1000]") != std::string::npos);

    std::ostringstream long_budget;
    {
        Progress progress(1000, long_budget);
        progress.set_mode(Progress::Mode::lines);
        progress.set_time_budget(1e6);  // the steps end first: a line at every tenth of them
        for (std::size_t step = 1; step <= 1000; ++step) progress.update(step, "s");
    }
    const std::string log = long_budget.str();
    CHECK(std::count(log.begin(), log.end(), '\n') == 10);
    CHECK(log.find("[1000/1000]") != std::string::npos);
    CHECK(log.find("time 00:00/277:46:40 ETA 00:00 s") != std::string::npos);
}

TEST_CASE("progress: silent on a stream of its own unless a mode is set") {
    std::ostringstream out;
    Progress progress(10, out);
    progress.update(1, "x");
    progress.finish();
    CHECK(out.str().empty());
}

TEST_CASE("progress: redraws are throttled, the last step is always drawn, shorter lines clear longer ones") {
    std::ostringstream out;
    Progress progress(1000, out);
    progress.set_mode(Progress::Mode::redraw);
    progress.update(1, "a rather long status text");
    for (std::size_t step = 2; step < 1000; ++step) progress.update(step, "s");
    progress.update(1000, "done");
    const std::string text = out.str();
    const auto draws = std::count(text.begin(), text.end(), '\r');
    CHECK(draws >= 2);
    CHECK(draws < 20);  // 1000 updates take far less than the 2 s that 20 draws would need
    const std::size_t last = text.rfind('\r');
    const std::string final_line = text.substr(last + 1);
    CHECK(final_line.find("[1000/1000]") == 0);
    CHECK(final_line.find("done") != std::string::npos);
    const std::size_t first_length = text.find('\r', 1) - 1;
    CHECK(final_line.size() >= first_length);

    progress.finish();
    progress.finish();
    const std::string finished = out.str();
    CHECK(std::count(finished.begin(), finished.end(), '\n') == 1);
}

TEST_CASE("progress: finish draws a state the throttle skipped") {
    std::ostringstream out;
    Progress progress(100, out);
    progress.set_mode(Progress::Mode::redraw);
    progress.update(1, "first");
    progress.update(2, "second");  // well within 100 ms of the first draw
    CHECK(out.str().find("second") == std::string::npos);
    progress.finish();
    CHECK(out.str().find("second") != std::string::npos);
    CHECK(out.str().find(" 2/100]") != std::string::npos);
}

TEST_CASE("format_duration") {
    CHECK(format_duration(0) == "00:00");
    CHECK(format_duration(83) == "01:23");
    CHECK(format_duration(59.6) == "01:00");
    CHECK(format_duration(3599.4) == "59:59");
    CHECK(format_duration(3723) == "1:02:03");
    CHECK(format_duration(36000) == "10:00:00");
    CHECK(format_duration(-1) == "--:--");
    CHECK(format_duration(std::nan("")) == "--:--");
    CHECK(format_duration(1e300) == "--:--");
}
