#include "framework/data/png.h"

#include <png.h>


#include "framework/core/error.h"

namespace moe {
namespace {

// The description of a grey width x height image for libpng's simplified API (no
// setjmp/longjmp in our code); `pixels` must hold its rows.
png_image gray_image(const char* caller, int64_t width, int64_t height,
                     const std::vector<uint8_t>& pixels) {
  MOE_CHECK(width > 0 && height > 0 &&
                static_cast<int64_t>(pixels.size()) == width * height,
            caller, ": ", pixels.size(), " pixels for ", width, "x", height);
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  image.width = static_cast<png_uint_32>(width);
  image.height = static_cast<png_uint_32>(height);
  image.format = PNG_FORMAT_GRAY;
  return image;
}

}  // namespace

void write_png_gray(const std::string& path, int64_t width, int64_t height,
                    const std::vector<uint8_t>& pixels) {
  png_image image = gray_image("write_png_gray", width, height, pixels);
  const int ok = png_image_write_to_file(&image, path.c_str(), /*convert_to_8bit=*/0,
                                         pixels.data(), static_cast<png_int_32>(width),
                                         nullptr);
  const std::string message = image.message;
  png_image_free(&image);
  MOE_USER_CHECK(ok != 0, path, ": cannot write PNG (libpng: ", message, ")");
}

std::vector<uint8_t> encode_png_gray(int64_t width, int64_t height,
                                     const std::vector<uint8_t>& pixels) {
  png_image image = gray_image("encode_png_gray", width, height, pixels);
  // The first call (no buffer) reports the size, the second writes.
  png_alloc_size_t size = 0;
  int ok = png_image_write_to_memory(&image, nullptr, &size, /*convert_to_8bit=*/0,
                                     pixels.data(), static_cast<png_int_32>(width), nullptr);
  std::vector<uint8_t> out(size);
  if (ok)
    ok = png_image_write_to_memory(&image, out.data(), &size, 0, pixels.data(),
                                   static_cast<png_int_32>(width), nullptr);
  const std::string message = image.message;
  png_image_free(&image);
  MOE_CHECK(ok != 0, "cannot encode a PNG (libpng: ", message, ")");
  out.resize(size);
  return out;
}

std::pair<int64_t, int64_t> read_png_size(const std::string& path) {
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  const int ok = png_image_begin_read_from_file(&image, path.c_str());
  const std::string message = image.message;
  const std::pair<int64_t, int64_t> size{image.width, image.height};
  png_image_free(&image);
  MOE_USER_CHECK(ok != 0, path, ": cannot read PNG (libpng: ", message, ")");
  return size;
}

std::vector<uint8_t> tile_images(const std::vector<std::vector<uint8_t>>& tiles, int64_t rows,
                                 int64_t cols, int64_t tile_h, int64_t tile_w, int64_t gap,
                                 uint8_t background, int64_t* width, int64_t* height) {
  MOE_CHECK(static_cast<int64_t>(tiles.size()) == rows * cols, "tile_images: ",
            tiles.size(), " tiles for ", rows, "x", cols);
  *width = cols * tile_w + (cols + 1) * gap;
  *height = rows * tile_h + (rows + 1) * gap;
  std::vector<uint8_t> out(static_cast<size_t>(*width * *height), background);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const std::vector<uint8_t>& tile = tiles[r * cols + c];
      MOE_CHECK(static_cast<int64_t>(tile.size()) == tile_h * tile_w, "tile_images: tile size");
      const int64_t top = gap + r * (tile_h + gap), left = gap + c * (tile_w + gap);
      for (int64_t y = 0; y < tile_h; ++y)
        for (int64_t x = 0; x < tile_w; ++x)
          out[(top + y) * *width + left + x] = tile[y * tile_w + x];
    }
  return out;
}

}  // namespace moe
