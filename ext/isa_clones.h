/* AVX2_CLONES: build a function for AVX2 and for the baseline ISA; the loader picks one for the CPU it
   runs on (GCC function multiversioning, x86-64 Linux). Elsewhere a single baseline build. */
#ifndef RUNTIME_ISA_CLONES_H
#define RUNTIME_ISA_CLONES_H
#if defined(__GNUC__) && defined(__x86_64__) && defined(__linux__)
#define AVX2_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define AVX2_CLONES
#endif
#endif
