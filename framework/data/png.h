#pragma once
// PNG output through libpng (the well-kept reference implementation), for sample grids.

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace moe {

// Writes an 8-bit greyscale PNG of width x height pixels, row-major. Problems (cannot
// create the file, libpng failure) are user errors naming the file.
void write_png_gray(const std::string& path, int64_t width, int64_t height,
                    const std::vector<uint8_t>& pixels);

// The same PNG as bytes in memory (e.g. for a TensorBoard image summary).
std::vector<uint8_t> encode_png_gray(int64_t width, int64_t height,
                                     const std::vector<uint8_t>& pixels);
// Width and height of a PNG file, read back through libpng (tests).
std::pair<int64_t, int64_t> read_png_size(const std::string& path);

// Tiles images into a grid: rows x cols tiles of tile_h x tile_w pixels with a border of
// `gap` pixels of value `background` around and between them. tiles[r * cols + c] is
// tile (r, c), tile_h * tile_w bytes each.
std::vector<uint8_t> tile_images(const std::vector<std::vector<uint8_t>>& tiles, int64_t rows,
                                 int64_t cols, int64_t tile_h, int64_t tile_w, int64_t gap,
                                 uint8_t background, int64_t* width, int64_t* height);

}  // namespace moe
