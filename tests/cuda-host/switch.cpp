// The fibers' context switch, shared by every build of the kernels (runtime.cpp).
// x86-64 System V: the callee-saved registers go on the stack and the stack pointer is
// swapped; plain C++ runs on the fibers, so there is no signal mask to save (swapcontext
// makes a system call at every switch, and a block switches thousands of times).

extern "C" void lucid_switch(void** save_sp, void* load_sp);
extern "C" void lucid_fiber_start();

#if !defined(__x86_64__)
#error "the CPU runner of the CUDA kernels switches fibers in x86-64 assembly"
#endif

asm(R"(
    .text
    .globl lucid_switch
    .type lucid_switch, @function
lucid_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size lucid_switch, .-lucid_switch

    # A new fiber's first switch returns here, with the address of its entry function
    # on the stack: pop it, align the stack for a call, call it (it never returns).
    .globl lucid_fiber_start
    .type lucid_fiber_start, @function
lucid_fiber_start:
    popq %rax
    subq $8, %rsp
    callq *%rax
    ud2
    .size lucid_fiber_start, .-lucid_fiber_start
)");
