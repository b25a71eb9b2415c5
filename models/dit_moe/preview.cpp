#include "models/dit_moe/preview.h"

#include <algorithm>
#include <cmath>

#include "framework/data/png.h"

namespace moe {

PreviewImage sample_grid(DitMoe& net, const Diffusion& diffusion, const Config& c, int rows,
                         uint64_t seed) {
  const int classes = c.model.num_classes;
  const int64_t size = c.model.image_size;
  const int64_t image_floats = int64_t{c.model.image_channels} * size * size;
  std::vector<int32_t> labels;  // row-major over the grid: column = class
  for (int r = 0; r < rows; ++r)
    for (int y = 0; y < classes; ++y) labels.push_back(y);
  SampleOptions options = sample_options(c);
  options.seed = seed;
  const std::vector<float> x = sample_images(net, diffusion, c.model, labels, options);

  // The first channel of each sample, from the model's data space back to [0, 255].
  std::vector<std::vector<uint8_t>> tiles;
  for (size_t i = 0; i < labels.size(); ++i) {
    std::vector<uint8_t> tile(static_cast<size_t>(size * size));
    for (int64_t j = 0; j < size * size; ++j) {
      const float p = x[i * image_floats + j] * c.data.image_std + c.data.image_mean;
      tile[j] = static_cast<uint8_t>(std::lround(std::clamp(p, 0.0f, 1.0f) * 255.0f));
    }
    tiles.push_back(std::move(tile));
  }
  PreviewImage image;
  image.tag = "samples";
  image.pixels = tile_images(tiles, rows, classes, size, size, /*gap=*/2, /*background=*/255,
                             &image.width, &image.height);
  return image;
}

}  // namespace moe
