#include "framework/kernels/host_copy.h"

#include "framework/kernels/ops.h"

namespace moe::ops {

Tensor to_host(Tensor t, Buffer& staging) {
  if (t.device == Device::kCpu) return t;
  MOE_CHECK(staging.device() == Device::kCpu && staging.dtype() == t.dtype,
            "to_host: staging of ", dtype_name(staging.dtype()), " on ",
            device_name(staging.device()), " for ", dtype_name(t.dtype));
  const Tensor host = staging.view(t.shape);
  copy(t, host);
  return host;
}

Tensor to_device(Tensor host, Device device, Buffer& staging) {
  MOE_CHECK(host.device == Device::kCpu, "to_device: the source is on ",
            device_name(host.device));
  if (device == Device::kCpu) return host;
  MOE_CHECK(staging.device() == device && staging.dtype() == host.dtype,
            "to_device: staging of ", dtype_name(staging.dtype()), " on ",
            device_name(staging.device()), " for ", device_name(device));
  const Tensor out = staging.view(host.shape);
  copy(host, out);
  return out;
}

}  // namespace moe::ops
