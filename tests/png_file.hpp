// A PNG file read back with stb_image, for tests of what the library and
// the apps draw.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <stb/stb_image.h>

namespace test {

struct Png {
    int width = 0, height = 0, channels = 0;
    std::vector<unsigned char> pixels;

    const unsigned char* at(int x, int y) const { return &pixels[(std::size_t(y) * width + x) * channels]; }
    bool is(int x, int y, const std::array<unsigned char, 3>& rgb) const { return std::equal(rgb.begin(), rgb.end(), at(x, y)); }
    // `from_row` skips the title and legend (whose swatches have the series colours).
    bool column_has(int x, const std::array<unsigned char, 3>& rgb, int from_row = 0) const {
        for (int y = from_row; y < height; ++y)
            if (is(x, y, rgb)) return true;
        return false;
    }
    int count(const std::array<unsigned char, 3>& rgb, int from_row = 0) const {
        int n = 0;
        for (int y = from_row; y < height; ++y)
            for (int x = 0; x < width; ++x) n += is(x, y, rgb);
        return n;
    }
};

inline Png read_png(const std::string& path) {
    Png png;
    unsigned char* data = stbi_load(path.c_str(), &png.width, &png.height, &png.channels, 0);
    REQUIRE_MESSAGE(data != nullptr, "stbi_load failed on " << path);
    png.pixels.assign(data, data + std::size_t(png.width) * png.height * png.channels);
    stbi_image_free(data);
    return png;
}

}  // namespace test
