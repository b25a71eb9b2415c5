// dump_logits MODEL.h5 TOKENS.txt OUT.f32: the logits of a batch under our inference
// model (models/generation.h), for the Hugging Face export test.
// TOKENS.txt holds one sequence per line as space-separated token ids (equal lengths);
// OUT.f32 receives the (B, T, V) logits as little-endian float32.

#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "models/generation.h"

int main(int argc, char** argv) {
  if (argc != 4) {
    std::cerr << "usage: dump_logits MODEL.h5 TOKENS.txt OUT.f32\n";
    return 2;
  }
  try {
    auto decoder = moe::load_decoder(argv[1]);
    std::ifstream in(argv[2]);
    std::vector<int32_t> ids, seq, pos;
    std::string line;
    for (int32_t s = 0; std::getline(in, line); ++s) {
      std::istringstream tokens(line);
      int32_t t = 0;
      for (int32_t id; tokens >> id; ++t) {
        ids.push_back(id);
        seq.push_back(s);
        pos.push_back(t);
      }
    }
    decoder->reset(seq.empty() ? 0 : seq.back() + 1);
    const moe::Tensor logits = decoder->forward(ids, seq, pos);
    std::ofstream out(argv[3], std::ios::binary);
    out.write(reinterpret_cast<const char*>(logits.data),
              static_cast<std::streamsize>(logits.numel() * sizeof(float)));
    return out.good() ? 0 : 1;
  } catch (const std::exception& e) {
    std::cerr << "dump_logits: " << e.what() << "\n";
    return 1;
  }
}
