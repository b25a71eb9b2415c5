#pragma once
// State dicts: the parameters of a ParamStore as HDF5 datasets "<group>/<global name>",
// float32, of the parameter's logical (unsharded) shape, so that any parallel layout
// can load any file.
//
// For files a single process writes (test dumps, tools): every parameter must be held
// whole (local == logical). Sharded stores are written collectively, each rank its own
// hyperslabs, by write_checkpoint (checkpoint.h); load_params reads each parameter's
// local block, so it serves sharded stores too.

#include <string>

#include "framework/checkpoint/h5_file.h"
#include "framework/tensor/param_store.h"

namespace moe {

// Writes every parameter's value (grads = false) or gradient (grads = true) to
// "<group>/<name>", e.g. group "/model" gives "/model/layers.0.attn.w_qkv".
void save_params(H5File& file, const std::string& group, const ParamStore& store,
                 bool grads);

// Reads every parameter of `store` (its local block) from "<group>/<name>". A parameter
// missing from the file, or stored with another shape, is a user error naming the
// parameter and the file; datasets in the group that the store does not know are
// ignored.
void load_params(const H5File& file, const std::string& group, ParamStore& store);
// A model for use (moe-sample, moe-generate): the parameters of /model and the state
// buffers of /buffers (router biases; a buffer the file lacks stays zero, as moe-train
// writes zeros without moe.bias_balance).
void load_weights(const H5File& file, ParamStore& store);

}  // namespace moe
