/* Function multiversioning (GCC target_clones, x86-64 Linux): a function is built for the baseline ISA
   and for wider vector units; the loader picks one for the CPU it runs on, so one build runs on any
   x86-64 CPU and still uses the wide units where they exist. Elsewhere a single baseline build.
   AVX2_CLONES: AVX2 and baseline. AVX512_CLONES: AVX-512F, AVX2 and baseline (for float64 loops,
   whose lanes AVX-512 doubles). Neither enables FMA: results are the same whichever clone runs. */
#ifndef RUNTIME_ISA_CLONES_H
#define RUNTIME_ISA_CLONES_H
#if defined(__GNUC__) && defined(__x86_64__) && defined(__linux__)
#define AVX2_CLONES __attribute__((target_clones("avx2", "default")))
#define AVX512_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define AVX2_CLONES
#define AVX512_CLONES
#endif
#endif
