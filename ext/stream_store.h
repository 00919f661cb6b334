/* Non-temporal stores for outputs written once and read later by someone else (the network input,
   the instance masks). Such outputs are megabytes: plain stores first read every line into the cache
   (read-for-ownership), doubling the memory traffic; streaming stores write the lines whole. The
   16-byte-aligned middle of a range is streamed, the ends are plain stores. Call stream_fence() before
   the data is read. Plain stores where SSE2 is missing. */
#ifndef RUNTIME_STREAM_STORE_H
#define RUNTIME_STREAM_STORE_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#define STREAM_STORE_SSE2 1
#else
#define STREAM_STORE_SSE2 0
#endif

static inline void stream_bytes(uint8_t* dst, const uint8_t* src, ptrdiff_t n) {
    ptrdiff_t i = 0;
#if STREAM_STORE_SSE2
    while (i < n && ((uintptr_t) (dst + i) & 15)) { dst[i] = src[i]; i++; }
    for (; i + 16 <= n; i += 16) _mm_stream_si128((__m128i*) (dst + i), _mm_loadu_si128((const __m128i*) (src + i)));
#endif
    if (i < n) memcpy(dst + i, src + i, (size_t) (n - i));
}

static inline void stream_fill_bytes(uint8_t* dst, ptrdiff_t n, uint8_t v) {
    ptrdiff_t i = 0;
#if STREAM_STORE_SSE2
    const __m128i vv = _mm_set1_epi8((char) v);
    while (i < n && ((uintptr_t) (dst + i) & 15)) { dst[i] = v; i++; }
    for (; i + 16 <= n; i += 16) _mm_stream_si128((__m128i*) (dst + i), vv);
#endif
    if (i < n) memset(dst + i, v, (size_t) (n - i));
}

static inline void stream_zero(uint8_t* dst, ptrdiff_t n) { stream_fill_bytes(dst, n, 0); }

static inline void stream_floats(float* dst, const float* src, ptrdiff_t n) {
    stream_bytes((uint8_t*) dst, (const uint8_t*) src, n * (ptrdiff_t) sizeof(float));
}

static inline void stream_fill_floats(float* dst, ptrdiff_t n, float v) {
    ptrdiff_t i = 0;
#if STREAM_STORE_SSE2
    const __m128 vv = _mm_set1_ps(v);
    while (i < n && ((uintptr_t) (dst + i) & 15)) { dst[i] = v; i++; }
    for (; i + 4 <= n; i += 4) _mm_stream_ps(dst + i, vv);
#endif
    for (; i < n; i++) dst[i] = v;
}

static inline void stream_fence(void) {
#if STREAM_STORE_SSE2
    _mm_sfence();
#endif
}
#endif
