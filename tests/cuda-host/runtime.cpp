// Runs the kernels of kernels/encoder.cu on the CPU, for tests (see shim.h). One build
// of this file is one translation unit holding the kernels (included from
// LUCID_KERNEL_SOURCE) and the fiber scheduler that runs them:
//
//   lucid_host_launch(name, grid, block, args, seed): launches a kernel as
//     cuLaunchKernel does (`args` points at each argument's value); 0 on success, else
//     an error (lucid_host_error() says which).
//   lucid_host_signature(name): the kernel's parameter types as the compiler has them,
//     for the test that holds the Rust launch plan to the .cu signatures.
//
// A launch runs the grid's blocks one after another. Each block's threads are fibers on
// the calling thread that switch only at __syncthreads() and at warp shuffles; at every
// switch the next fiber is drawn at random (seeded), so a missing barrier or a race on
// shared memory gives a wrong answer on some seeds. The kernels are built once as they
// are and once per deliberate mutation, with the three entry points' names prefixed
// (LUCID_PREFIX) so that all builds link into one test.

#include "shim.h"

#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

// In an unnamed namespace, everything of the kernels has internal linkage (the C-linkage
// kernels too), so several builds of them link into one test without one build's
// helpers standing in for another's.
namespace {
#include LUCID_KERNEL_SOURCE
}  // namespace

#ifndef LUCID_PREFIX
#define LUCID_PREFIX
#endif
#define LUCID_CAT2(a, b) a##b
#define LUCID_CAT(a, b) LUCID_CAT2(a, b)
#define LUCID_EXPORT(name) LUCID_CAT(LUCID_PREFIX, name)

extern "C" void lucid_switch(void** save_sp, void* load_sp);
extern "C" void lucid_fiber_start();

namespace {

constexpr size_t STACK = 64 * 1024;
constexpr int MAX_THREADS = 1024;

enum class State { Ready, Waiting, Done };

struct Fiber {
    void* sp = nullptr;
    dim3 idx;
    State state = State::Ready;
    int warp = 0;
    // What it waits at: -1 the block barrier, else its warp's exchange.
    int waiting_at = -1;
};

// The block being run.
struct Block {
    std::vector<Fiber> fibers;
    std::unique_ptr<char[]> stacks;
    // Fibers ready to run (the scheduler draws from it).
    std::vector<int> ready;
    void* scheduler_sp = nullptr;
    int current = -1;
    int live = 0;
    int arrived = 0;
    std::vector<int> warp_live, warp_arrived;
    std::vector<float> lanes;
    std::uint64_t rng = 1;
    const std::function<void()>* body = nullptr;
    std::string error;
};

thread_local Block* running = nullptr;

std::uint64_t draw(std::uint64_t& x) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return x;
}

void yield() {
    Fiber& f = running->fibers[running->current];
    lucid_switch(&f.sp, running->scheduler_sp);
}

void wake(int i) {
    running->fibers[i].state = State::Ready;
    running->ready.push_back(i);
}

// Wakes the threads waiting at the block barrier once every live thread is there.
void release_block() {
    Block& b = *running;
    if (b.arrived > 0 && b.arrived >= b.live) {
        b.arrived = 0;
        for (size_t i = 0; i < b.fibers.size(); ++i)
            if (b.fibers[i].state == State::Waiting && b.fibers[i].waiting_at < 0) wake((int)i);
    }
}

// Wakes the lanes waiting at warp `w`'s exchange once every live lane is there.
void release_warp(int w) {
    Block& b = *running;
    if (b.warp_arrived[w] > 0 && b.warp_arrived[w] >= b.warp_live[w]) {
        b.warp_arrived[w] = 0;
        const int end = std::min((w + 1) * 32, (int)b.fibers.size());
        for (int i = w * 32; i < end; ++i)
            if (b.fibers[i].state == State::Waiting && b.fibers[i].waiting_at == w) wake(i);
    }
}

void warp_barrier() {
    Fiber& f = running->fibers[running->current];
    f.waiting_at = f.warp;
    f.state = State::Waiting;
    running->warp_arrived[f.warp]++;
    release_warp(f.warp);
    yield();
}

// Every fiber starts here (through lucid_fiber_start) and ends here.
void fiber_main() {
    (*running->body)();
    Fiber& f = running->fibers[running->current];
    f.state = State::Done;
    running->live--;
    running->warp_live[f.warp]--;
    yield();
    std::abort();  // a finished fiber is never resumed
}

// Runs one block of `threads` threads; false on a deadlock (threads waiting at a barrier
// the others never reach) or a shuffle the shim cannot run.
bool run_block(int threads) {
    Block& b = *running;
    b.fibers.assign(threads, Fiber{});
    b.live = threads;
    b.arrived = 0;
    const int warps = (threads + 31) / 32;
    b.warp_live.assign(warps, 0);
    b.warp_arrived.assign(warps, 0);
    b.lanes.assign((size_t)warps * 32, 0.0f);
    for (int i = 0; i < threads; ++i) {
        Fiber& f = b.fibers[i];
        f.idx.x = i % blockDim.x;
        f.idx.y = (i / blockDim.x) % blockDim.y;
        f.idx.z = i / (blockDim.x * blockDim.y);
        f.warp = i / 32;
        b.warp_live[f.warp]++;
        // The new stack, top down: padding, the entry function, the trampoline that
        // lucid_switch's `ret` enters, and six callee-saved registers.
        char* top = b.stacks.get() + (size_t)(i + 1) * STACK;
        auto* sp = reinterpret_cast<std::uintptr_t*>(reinterpret_cast<std::uintptr_t>(top) & ~std::uintptr_t(15));
        *--sp = 0;
        *--sp = reinterpret_cast<std::uintptr_t>(&fiber_main);
        *--sp = reinterpret_cast<std::uintptr_t>(&lucid_fiber_start);
        for (int r = 0; r < 6; ++r) *--sp = 0;
        f.sp = sp;
    }
    b.ready.clear();
    for (int i = 0; i < threads; ++i) b.ready.push_back(i);
    while (!b.ready.empty() && b.error.empty()) {
        const size_t at = draw(b.rng) % b.ready.size();
        const int pick = b.ready[at];
        b.ready[at] = b.ready.back();
        b.ready.pop_back();
        b.current = pick;
        threadIdx = b.fibers[pick].idx;
        lucid_switch(&b.scheduler_sp, b.fibers[pick].sp);
        if (b.fibers[pick].state == State::Done) {
            // An exited thread no longer holds a barrier back.
            release_block();
            release_warp(b.fibers[pick].warp);
        }
    }
    if (!b.error.empty()) return false;
    for (auto& f : b.fibers) {
        if (f.state != State::Done) {
            b.error = "deadlock: threads wait at a barrier the rest of their block never reaches";
            return false;
        }
    }
    return true;
}

bool launch(dim3 grid, dim3 threads, const std::function<void()>& body, std::uint64_t seed, std::string& error) {
    const long long n = (long long)threads.x * threads.y * threads.z;
    if (n <= 0 || n > MAX_THREADS || grid.x == 0 || grid.y == 0 || grid.z == 0) {
        error = "grid or block size out of range";
        return false;
    }
    Block b;
    b.stacks.reset(new char[(size_t)n * STACK]);
    b.rng = seed | 1;
    b.body = &body;
    running = &b;
    gridDim = grid;
    blockDim = threads;
    bool ok = true;
    for (unsigned z = 0; z < grid.z && ok; ++z)
        for (unsigned y = 0; y < grid.y && ok; ++y)
            for (unsigned x = 0; x < grid.x && ok; ++x) {
                blockIdx = dim3{x, y, z};
                ok = run_block((int)n);
            }
    error = b.error;
    running = nullptr;
    return ok;
}

// Parameter types as text; a kernel with a type not listed here does not compile.
template <typename T> struct Type;
#define LUCID_TYPE(t) \
    template <> struct Type<t> { static constexpr const char* name = #t; };
LUCID_TYPE(float*)
LUCID_TYPE(const float*)
LUCID_TYPE(const unsigned int*)
LUCID_TYPE(const int*)
LUCID_TYPE(unsigned char*)
LUCID_TYPE(int)
LUCID_TYPE(long long)
LUCID_TYPE(float)
#undef LUCID_TYPE

template <typename... A> std::string signature(void (*)(A...)) {
    std::string out;
    ((out += (out.empty() ? "" : ","), out += Type<A>::name), ...);
    return out;
}

template <typename... A, size_t... I> void call(void (*kernel)(A...), void** args, std::index_sequence<I...>) {
    kernel(*static_cast<std::remove_cv_t<A>*>(args[I])...);
}

template <typename... A> void call_all(void (*kernel)(A...), void** args) { call(kernel, args, std::index_sequence_for<A...>{}); }

std::string last_error, last_signature;

}  // namespace

static void __syncthreads() {
    Fiber& f = running->fibers[running->current];
    f.waiting_at = -1;
    f.state = State::Waiting;
    running->arrived++;
    release_block();
    yield();
}

static float lucid_shfl_xor(unsigned int mask, float v, int lane_mask) {
    const int me = running->current, lane = me & 31, warp = me >> 5;
    if (mask != 0xffffffffu && running->error.empty()) running->error = "a shuffle over part of a warp (the shim runs full warps only)";
    running->lanes[(size_t)warp * 32 + lane] = v;
    warp_barrier();
    const float got = running->lanes[(size_t)warp * 32 + (lane ^ lane_mask)];
    warp_barrier();
    return got;
}

// Every kernel of encoder.cu, by the name it is launched by.
#define LUCID_KERNELS(X) \
    X(embed_layernorm) X(bias_add) X(bias_gelu) X(bias_residual_layernorm) X(deberta_relative_bias) X(masked_softmax) X(pool) X(score_heads)

extern "C" int LUCID_EXPORT(lucid_host_launch)(const char* name, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                                               unsigned bz, void** args, unsigned long long seed) {
    const std::string n = name;
    std::function<void()> body;
#define LUCID_BODY(k) \
    if (n == #k) body = [args] { call_all(k, args); };
    LUCID_KERNELS(LUCID_BODY)
#undef LUCID_BODY
    if (!body) {
        last_error = "no kernel " + n;
        return 1;
    }
    std::string error;
    if (!launch(dim3{gx, gy, gz}, dim3{bx, by, bz}, body, seed, error)) {
        last_error = error;
        return 2;
    }
    last_error.clear();
    return 0;
}

extern "C" const char* LUCID_EXPORT(lucid_host_error)() { return last_error.c_str(); }

extern "C" const char* LUCID_EXPORT(lucid_host_signature)(const char* name) {
    const std::string n = name;
    last_signature.clear();
#define LUCID_SIG(k) \
    if (n == #k) last_signature = signature(k);
    LUCID_KERNELS(LUCID_SIG)
#undef LUCID_SIG
    return last_signature.c_str();
}
