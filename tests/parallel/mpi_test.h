#pragma once
// Shared by the tests run under mpirun (tests/parallel/test_*.cpp): the process's MPI
// environment, created by mpi_gtest_main.cpp before any test runs and alive until
// every test has finished.

#include "framework/parallel/mpi_env.h"

namespace moe::test {

const MpiEnv& mpi_env();

}  // namespace moe::test
