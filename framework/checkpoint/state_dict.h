#pragma once
// State dicts: the parameters of a ParamStore as HDF5 datasets "<group>/<global name>",
// float32, of the parameter's logical (unsharded) shape, so that any parallel layout
// can load any file.
//
// Single process for now: every parameter must be held whole (local == logical).
// Sharded parameters will be written and read as hyperslabs of the logical dataset
// with collective MPI-IO.

#include <string>

#include "framework/checkpoint/h5_file.h"
#include "framework/parallel/communicator.h"
#include "framework/tensor/param_store.h"

namespace moe {

// Writes every parameter's value (grads = false) or gradient (grads = true) to
// "<group>/<name>", e.g. group "/model" gives "/model/layers.0.attn.w_qkv".
void save_params(H5File& file, const std::string& group, const ParamStore& store,
                 bool grads);

// Reads every parameter of `store` from "<group>/<name>". A parameter missing from the
// file, or stored with another shape, is a user error naming the parameter and the
// file; datasets in the group that the store does not know are ignored.
void load_params(const H5File& file, const std::string& group, ParamStore& store);

// Writes the logical value of every parameter to "<group>/<name>" of `file` (non-null on
// ep rank 0 of `ep` only, the writer): the other ep ranks send it their expert blocks
// (contiguous along the expert axis, in ep order, ExpertPlacement). Collective over
// `ep`; call it on one ep group (the writer's), whose every rank holds all
// non-expert parameters whole. A gather through one rank: the final-weights file of a
// run, until checkpoints write their hyperslabs collectively with MPI-IO.
void save_params_gathered(H5File* file, const std::string& group, const ParamStore& store,
                          Communicator& ep);

}  // namespace moe
