#pragma once
// CPU kernels of incremental (KV-cached) decoding: rotary embedding at given positions
// and the attention of one query row over a sequence's cached keys and values. They
// compute, for the rows they are given, what rope_apply and attention_forward (ops.h)
// compute for a whole sequence; SelfAttention::forward_cached is tested against
// SelfAttention::forward (tests/unit/test_generate.cpp).

#include <cstdint>

namespace moe::cpu {

// rope_apply's rotation, in place, on `rows` rows of H heads of D floats (row stride
// `stride`), row r at position pos[r]: angle pos[r] * theta^(-2i/D) for pair (i, i+D/2).
void rope_apply_at(float* x, const int32_t* pos, int64_t rows, int64_t H, int64_t D,
                   int64_t stride, float theta);

// One query row q (H, D) over `len` cached positions: k, v (len, H*D) row-major;
// out (H, D) = per head softmax_t(q_h . k_{t,h} / sqrt(D)) weighted sum of v_{t,h}.
// scratch holds len floats.
void attention_decode(const float* q, const float* k, const float* v, float* out,
                      float* scratch, int64_t len, int64_t H, int64_t D);

}  // namespace moe::cpu
