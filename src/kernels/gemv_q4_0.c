#include "gemv_q4_0.h"

#include <immintrin.h>
#include <string.h>

#include "../core/cpu.h"
#include "quant_ref.h"
#include "simd_x86.h"
#include "types.h"

/* Four blocks: elements 0..15 of block l at lo[16l..], 16..31 at hi[16l..];
 * lane j (4 bytes of lo and hi) belongs to block j/4. */
typedef struct {
    int8_t lo[64];
    int8_t hi[64];
    float dx[16]; /* the block's scale, per lane */
    int32_t c[16]; /* -8 * sum of the lane's 8 activations: cancels the nibbles' +8 */
} q4x4_act;

static int64_t n_chunks(int64_t cols) { return (cols / 32 + 3) / 4; }

size_t kvq_q4_0x4_act_size(int64_t cols) { return (size_t)n_chunks(cols) * sizeof(q4x4_act); }

/* quant32: kvq_quant32_ref or its AVX-512 twin (the same bytes) */
static void quant_with(void (*quant32)(const float *, int8_t *, float *), const float *x, void *act, int64_t cols) {
    const int64_t nb = cols / 32;
    q4x4_act *a = act;
    memset(a, 0, kvq_q4_0x4_act_size(cols)); /* padding blocks of the last chunk stay zero */
    for (int64_t b = 0; b < nb; b++) {
        q4x4_act *ch = a + b / 4;
        const int l = (int)(b % 4);
        int8_t q[32];
        float d;
        quant32(x + b * 32, q, &d);
        memcpy(ch->lo + 16 * l, q, 16);
        memcpy(ch->hi + 16 * l, q + 16, 16);
        for (int m = 0; m < 4; m++) {
            int s = 0;
            for (int i = 0; i < 4; i++) s += q[4 * m + i] + q[16 + 4 * m + i];
            ch->dx[4 * l + m] = d;
            ch->c[4 * l + m] = -8 * s;
        }
    }
}

void kvq_q4_0x4_quant_ref(const float *x, void *act, int64_t cols) { quant_with(kvq_quant32_ref, x, act, cols); }

void kvq_q4_0x4_quant(const float *x, void *act, int64_t cols) {
    quant_with(kvq_isa_vbmi() ? kvq_quant32_512 : kvq_quant32_ref, x, act, cols);
}

float kvq_q4_0x4_dot_ref(const void *w, const void *act, int64_t cols) {
    const kvq_block_q4_0 *x = w;
    const q4x4_act *a = act;
    float s = 0;
    for (int64_t b = 0; b < cols / 32; b++) {
        const q4x4_act *ch = a + b / 4;
        const int l = (int)(b % 4);
        int32_t dot = 0;
        for (int i = 0; i < 16; i++)
            dot += (x[b].qs[i] & 15) * ch->lo[16 * l + i] + (x[b].qs[i] >> 4) * ch->hi[16 * l + i];
        for (int m = 0; m < 4; m++) dot += ch->c[4 * l + m];
        s += (float)dot * kvq_f16_to_f32(x[b].d) * ch->dx[4 * l];
    }
    return s;
}

#define T_VBMI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512vbmi,avx2,fma,f16c")))

/* One chunk (four blocks, 72 bytes) found at byte offset s of the 128 bytes
 * l0:l1. Byte 16l+i of the gathered nibbles is qs[i] of block l, at offset
 * s+18l+2+i; block l's fp16 scale is word s/2+9l. */
T_VBMI static inline __m512 chunk(__m512i l0, __m512i l1, int s, const q4x4_act *a, __m512 f) {
    const __m512i idx = _mm512_set_epi8(71, 70, 69, 68, 67, 66, 65, 64, 63, 62, 61, 60, 59, 58, 57, 56, /* l = 3 */
                                        53, 52, 51, 50, 49, 48, 47, 46, 45, 44, 43, 42, 41, 40, 39, 38, /* l = 2 */
                                        35, 34, 33, 32, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, /* l = 1 */
                                        17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2);        /* l = 0 */
    const __m512i widx = _mm512_set_epi16(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 27, 27, 27, 27, 18, 18,
                                          18, 18, 9, 9, 9, 9, 0, 0, 0, 0);
    const __m512i m4 = _mm512_set1_epi8(15);
    __m512i qs = _mm512_permutex2var_epi8(l0, _mm512_add_epi8(idx, _mm512_set1_epi8((char)s)), l1);
    __m512i acc = _mm512_dpbusd_epi32(_mm512_loadu_si512(a->c), _mm512_and_si512(qs, m4), _mm512_loadu_si512(a->lo));
    acc = _mm512_dpbusd_epi32(acc, _mm512_and_si512(_mm512_srli_epi16(qs, 4), m4), _mm512_loadu_si512(a->hi));
    __m512i sw = _mm512_permutex2var_epi16(l0, _mm512_add_epi16(widx, _mm512_set1_epi16((short)(s / 2))), l1);
    __m512 dw = _mm512_cvtph_ps(_mm512_castsi512_si256(sw));
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc), _mm512_mul_ps(dw, _mm512_loadu_ps(a->dx)), f);
}

/* Chunks k0..k1-1 from the aligned 64-byte lines that hold them. Loads that
 * straddle two lines are what this avoids: on this machine (Zen 4) a
 * line-straddling load that misses the cache halves the streaming rate of a
 * decode kernel. Needs p 8-aligned so a chunk never spans three lines
 * (72k mod 64 is a multiple of 8, at most 56). A line may extend before p or
 * past the row, never past a page, hence no_sanitize_address. */
T_VBMI __attribute__((no_sanitize_address)) static __m512 dot_lines(const uint8_t *p, const q4x4_act *a, int64_t nc) {
    __m512 f0 = _mm512_setzero_ps(), f1 = _mm512_setzero_ps();
    int64_t k = 0;
    /* two chains: one FMA chain would wait on its own latency */
    for (; k + 2 <= nc; k += 2) {
        const uintptr_t A0 = (uintptr_t)(p + 72 * k), A1 = A0 + 72, L0 = A0 & ~(uintptr_t)63, L1 = A1 & ~(uintptr_t)63;
        f0 = chunk(_mm512_load_si512((const void *)L0), _mm512_load_si512((const void *)(L0 + 64)), (int)(A0 - L0),
                   a + k, f0);
        f1 = chunk(_mm512_load_si512((const void *)L1), _mm512_load_si512((const void *)(L1 + 64)), (int)(A1 - L1),
                   a + k + 1, f1);
    }
    if (k < nc) {
        const uintptr_t A0 = (uintptr_t)(p + 72 * k), L0 = A0 & ~(uintptr_t)63;
        f0 = chunk(_mm512_load_si512((const void *)L0), _mm512_load_si512((const void *)(L0 + 64)), (int)(A0 - L0),
                   a + k, f0);
    }
    return _mm512_add_ps(f0, f1);
}

/* Chunks from unaligned loads, reading exactly the chunk's bytes: the tail
 * (fewer than four blocks: the masked loads zero the rest, and the padding's
 * zero activations cancel them) and rows that are not 8-aligned. */
T_VBMI static __m512 dot_exact(const uint8_t *p, const q4x4_act *a, int64_t k0, int64_t nb) {
    __m512 f = _mm512_setzero_ps();
    for (int64_t k = k0; 4 * k < nb; k++) {
        const int64_t bytes = 18 * (nb - 4 * k < 4 ? nb - 4 * k : 4);
        const uint8_t *q = p + 72 * k;
        const __mmask64 m0 = bytes >= 64 ? ~0ull : (1ull << bytes) - 1;
        const __mmask64 m1 = bytes > 64 ? (1ull << (bytes - 64)) - 1 : 0;
        f = chunk(_mm512_maskz_loadu_epi8(m0, q), _mm512_maskz_loadu_epi8(m1, q + 64), 0, a + k, f);
    }
    return f;
}

T_VBMI float kvq_q4_0x4_dot_vbmi(const void *w, const void *act, int64_t cols) {
    const uint8_t *p = w;
    const q4x4_act *a = act;
    const int64_t nb = cols / 32, nc = ((uintptr_t)p & 7) ? 0 : nb / 4;
    __m512 f = nc ? dot_lines(p, a, nc) : _mm512_setzero_ps();
    if (4 * nc < nb) f = _mm512_add_ps(f, dot_exact(p, a, nc, nb));
    return _mm512_reduce_add_ps(f);
}

T_VBMI void kvq_q4_0x4_rows_vbmi(const void *w, size_t row_bytes, int n_rows, const void *act, int64_t cols, float *y) {
    const uint8_t *p = w;
    for (int r = 0; r < n_rows; r++, p += row_bytes) y[r] = kvq_q4_0x4_dot_vbmi(p, act, cols);
}
