// A host stand-in for the CUDA built-ins kernels/encoder.cu uses, so the kernels compile
// with g++ and run on the CPU in tests (tests/tests/kernels_on_cpu.rs). Force-included
// (`g++ -include shim.h`) ahead of the unchanged .cu source.
//
// A launch runs the grid's blocks one after another; each block's threads are fibers
// (runtime.cpp) that switch only at `__syncthreads()` and at warp shuffles, in an order
// drawn at random at every switch, so a missing barrier or a shared-memory race gives a
// wrong answer on some runs. `__shared__` variables are function statics: one copy,
// shared by the block that is running, as on a GPU.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstring>
#include <algorithm>

struct dim3 {
    unsigned int x = 1, y = 1, z = 1;
};

// The running fiber's indices (set by the scheduler before it resumes a fiber). Each
// build of the kernels is one translation unit (runtime.cpp includes the .cu), so these
// are its own; per OS thread, so that tests may launch from several threads at once.
static thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static

// A barrier across the block's threads (runtime.cpp).
static void __syncthreads();
// The value of lane (this lane ^ lane_mask) of the warp; every lane of the mask must call.
static float lucid_shfl_xor(unsigned int mask, float v, int lane_mask);
inline float __shfl_xor_sync(unsigned int mask, float v, int lane_mask) { return lucid_shfl_xor(mask, v, lane_mask); }

inline float __int_as_float(int i) {
    float f;
    std::memcpy(&f, &i, sizeof f);
    return f;
}
inline float __expf(float x) { return std::exp(x); }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
// erff, expf, fmaxf, sqrtf: the C library's, which <cmath> declares globally.
using std::max;
using std::min;
