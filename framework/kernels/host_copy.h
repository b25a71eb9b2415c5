#pragma once
// The named crossings between a device model and the host. The host sees only what it
// must: loss and grad-norm scalars, the routing data (choices, counts, combine weights),
// the inputs it loads and the checkpoints it writes. On the CPU both functions hand the
// tensor back untouched, so the CPU path copies nothing.

#include "framework/tensor/tensor.h"

namespace moe::ops {

// t's elements in host memory: t itself on the CPU, else a copy in `staging` (a host
// buffer, grown as needed; the view is valid until staging is next used).
Tensor to_host(Tensor t, Buffer& staging);
// Host elements `host` on `device`: host itself for the CPU, else a copy in `staging`
// (a buffer on `device`).
Tensor to_device(Tensor host, Device device, Buffer& staging);

}  // namespace moe::ops
