#include "gemv_q4_K.h"

#include <immintrin.h>
#include <string.h>

#include "quant_ref.h"
#include "simd_x86.h"
#include "types.h"

/* One 256-value block of activations. x holds sub-blocks (32 values each) in
 * the order 0,2 | 1,3 | 4,6 | 5,7: the low nibbles of weight bytes 0..63
 * are sub-blocks 0 and 2, their high nibbles 1 and 3, and so on. */
typedef struct {
    int8_t x[256];
    int32_t bsum[8]; /* sum of sub-block j's values, natural order: for the mins */
    float d;
    uint8_t pad[28];
} q4Kx_act;

static const int ORDER[8] = {0, 2, 1, 3, 4, 6, 5, 7};

size_t kvq_q4_Kx_act_size(int64_t cols) { return (size_t)(cols / KVQ_QK_K) * sizeof(q4Kx_act); }

/* A Q8_K block laid out for the kernel: the Q8_K sums of 16 values, paired. */
static void put_block(q4Kx_act *a, const kvq_block_q8_K *y) {
    for (int k = 0; k < 8; k++) memcpy(a->x + 32 * k, y->qs + 32 * ORDER[k], 32);
    for (int j = 0; j < 8; j++) a->bsum[j] = y->bsums[2 * j] + y->bsums[2 * j + 1];
    a->d = y->d;
    memset(a->pad, 0, sizeof a->pad);
}

static void quant_with(kvq_from_float_fn q8_K, const float *x, void *act, int64_t cols) {
    q4Kx_act *a = act;
    for (int64_t b = 0; b < cols / KVQ_QK_K; b++) {
        kvq_block_q8_K y;
        q8_K(x + b * KVQ_QK_K, &y, KVQ_QK_K);
        put_block(a + b, &y);
    }
}

void kvq_q4_Kx_quant_ref(const float *x, void *act, int64_t cols) { quant_with(kvq_q8_K_from_float_ref, x, act, cols); }

/* the active ISA's Q8_K quantizer (SIMD on AVX-512) */
void kvq_q4_Kx_quant(const float *x, void *act, int64_t cols) {
    quant_with(kvq_traits(KVQ_TYPE_Q8_K)->from_float, x, act, cols);
}

float kvq_q4_Kx_dot_ref(const void *w, const void *act, int64_t cols) {
    const kvq_block_q4_K *x = w;
    const q4Kx_act *a = act;
    float s = 0;
    for (int64_t b = 0; b < cols / KVQ_QK_K; b++) {
        int32_t dot = 0, mins = 0;
        for (int j = 0; j < 8; j++) {
            uint8_t sc, mn;
            kvq_k4_scale_min(j, x[b].scales, &sc, &mn);
            int k = 0;
            while (ORDER[k] != j) k++;
            int32_t p = 0;
            for (int i = 0; i < 32; i++) {
                const uint8_t byte = x[b].qs[32 * (j / 2) + i];
                p += ((j & 1) ? byte >> 4 : byte & 15) * a[b].x[32 * k + i];
            }
            dot += sc * p;
            mins += mn * a[b].bsum[j];
        }
        s += a[b].d * (kvq_f16_to_f32(x[b].d) * (float)dot - kvq_f16_to_f32(x[b].dmin) * (float)mins);
    }
    return s;
}

#define T_512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")))


/* One block whose 144 bytes start at byte s (0, 16, 32 or 48) of the three
 * aligned lines l0 l1 l2. Accumulates d_w*d_x*sum(sc*p) into f and
 * dmin*d_x*sum(mn*bsum) into fm. */
T_512 static inline void block(__m512i l0, __m512i l1, __m512i l2, int s, const uint8_t *hdr, const q4Kx_act *a,
                               __m512 *f, __m256 *fm) {
    const __m512i iota = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    const __m512i sh = _mm512_add_epi32(iota, _mm512_set1_epi32((s + 16) / 4));
    const __m512i q0 = _mm512_permutex2var_epi32(l0, sh, l1), q1 = _mm512_permutex2var_epi32(l1, sh, l2);
    const __m512i m4 = _mm512_set1_epi8(15), z = _mm512_setzero_si512();
    __m512i p0 = _mm512_dpbusd_epi32(z, _mm512_and_si512(q0, m4), _mm512_loadu_si512(a->x));
    __m512i p1 = _mm512_dpbusd_epi32(z, _mm512_and_si512(_mm512_srli_epi16(q0, 4), m4), _mm512_loadu_si512(a->x + 64));
    __m512i p2 = _mm512_dpbusd_epi32(z, _mm512_and_si512(q1, m4), _mm512_loadu_si512(a->x + 128));
    __m512i p3 = _mm512_dpbusd_epi32(z, _mm512_and_si512(_mm512_srli_epi16(q1, 4), m4), _mm512_loadu_si512(a->x + 192));
    uint8_t sc8[8], mn8[8];
    uint64_t sc, mn;
    kvq_k4_scales_mins(hdr + 4, sc8, mn8);
    memcpy(&sc, sc8, 8);
    memcpy(&mn, mn8, 8);
    /* lanes 0-7 of p0 are sub-block 0, 8-15 sub-block 2; p1: 1, 3; p2: 4, 6; p3: 5, 7 */
    const __m512i s16 = _mm512_cvtepu8_epi32(_mm_cvtsi64_si128((long long)sc));
    const __m512i i0 = _mm512_set_epi32(2, 2, 2, 2, 2, 2, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0);
    const __m512i i1 = _mm512_set_epi32(3, 3, 3, 3, 3, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1);
    const __m512i i2 = _mm512_set_epi32(6, 6, 6, 6, 6, 6, 6, 6, 4, 4, 4, 4, 4, 4, 4, 4);
    const __m512i i3 = _mm512_set_epi32(7, 7, 7, 7, 7, 7, 7, 7, 5, 5, 5, 5, 5, 5, 5, 5);
    /* |p| <= 4 * 15 * 127 fits the low 16 bits of each lane and a scale (< 64)
     * leaves the high 16 bits zero, so madd_epi16 is the exact product, at a
     * fraction of mullo_epi32's cost */
    __m512i t = _mm512_madd_epi16(p0, _mm512_permutexvar_epi32(i0, s16));
    t = _mm512_add_epi32(t, _mm512_madd_epi16(p1, _mm512_permutexvar_epi32(i1, s16)));
    t = _mm512_add_epi32(t, _mm512_madd_epi16(p2, _mm512_permutexvar_epi32(i2, s16)));
    t = _mm512_add_epi32(t, _mm512_madd_epi16(p3, _mm512_permutexvar_epi32(i3, s16)));
    kvq_f16 dh, mh;
    memcpy(&dh, hdr, 2);
    memcpy(&mh, hdr + 2, 2);
    *f = _mm512_fmadd_ps(_mm512_cvtepi32_ps(t), _mm512_set1_ps(_cvtsh_ss(dh) * a->d), *f);
    /* |bsum| <= 32 * 127 and mins < 64: the same exact madd */
    const __m256i mp = _mm256_madd_epi16(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)mn)),
                                         _mm256_loadu_si256((const __m256i *)a->bsum));
    *fm = _mm256_fmadd_ps(_mm256_cvtepi32_ps(mp), _mm256_set1_ps(_cvtsh_ss(mh) * a->d), *fm);
}

/* sum(f) - sum(fm) with one horizontal sum: on rows of a few blocks the
 * reductions are a large share of the time */
T_512 static inline float finish(__m512 f, __m256 fm) {
    __m256 h = _mm256_add_ps(_mm512_castps512_ps256(f), _mm512_extractf32x8_ps(f, 1));
    return kvq_hsum8(_mm256_sub_ps(h, fm));
}

/* Blocks read from the aligned 64-byte lines that hold them (see
 * gemv_q4_0.c: line-straddling loads that miss halve the streaming rate on
 * this machine). Needs p 16-aligned so a block spans exactly three lines. A
 * line may extend before p or past the row, never past a page, hence
 * no_sanitize_address. */
T_512 __attribute__((no_sanitize_address)) static inline float dot_lines(const uint8_t *p, const q4Kx_act *a, int64_t nb) {
    __m512 f0 = _mm512_setzero_ps(), f1 = _mm512_setzero_ps();
    __m256 fm = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 2 <= nb; k += 2) {
        const uintptr_t A0 = (uintptr_t)(p + 144 * k), L0 = A0 & ~(uintptr_t)63;
        const uintptr_t A1 = A0 + 144, L1 = A1 & ~(uintptr_t)63;
        block(_mm512_load_si512((const void *)L0), _mm512_load_si512((const void *)(L0 + 64)),
              _mm512_load_si512((const void *)(L0 + 128)), (int)(A0 - L0), (const uint8_t *)A0, a + k, &f0, &fm);
        block(_mm512_load_si512((const void *)L1), _mm512_load_si512((const void *)(L1 + 64)),
              _mm512_load_si512((const void *)(L1 + 128)), (int)(A1 - L1), (const uint8_t *)A1, a + k + 1, &f1, &fm);
    }
    if (k < nb) {
        const uintptr_t A0 = (uintptr_t)(p + 144 * k), L0 = A0 & ~(uintptr_t)63;
        block(_mm512_load_si512((const void *)L0), _mm512_load_si512((const void *)(L0 + 64)),
              _mm512_load_si512((const void *)(L0 + 128)), (int)(A0 - L0), (const uint8_t *)A0, a + k, &f0, &fm);
    }
    return finish(_mm512_add_ps(f0, f1), fm);
}

/* Rows that are not 16-aligned: exact unaligned loads of each block. */
T_512 static float dot_exact(const uint8_t *p, const q4Kx_act *a, int64_t nb) {
    __m512 f = _mm512_setzero_ps();
    __m256 fm = _mm256_setzero_ps();
    for (int64_t k = 0; k < nb; k++) {
        const uint8_t *q = p + 144 * k;
        block(_mm512_loadu_si512(q), _mm512_loadu_si512(q + 64), _mm512_maskz_loadu_epi8(0xFFFF, q + 128), 0, q,
              a + k, &f, &fm);
    }
    return finish(f, fm);
}

T_512 float kvq_q4_Kx_dot_512(const void *w, const void *act, int64_t cols) {
    const int64_t nb = cols / KVQ_QK_K;
    return ((uintptr_t)w & 15) ? dot_exact(w, act, nb) : dot_lines(w, act, nb);
}

T_512 void kvq_q4_Kx_rows_512(const void *w, size_t row_bytes, int n_rows, const void *act, int64_t cols, float *y) {
    const int64_t nb = cols / KVQ_QK_K;
    const uint8_t *p = w;
    for (int r = 0; r < n_rows; r++, p += row_bytes) y[r] = ((uintptr_t)p & 15) ? dot_exact(p, act, nb) : dot_lines(p, act, nb);
}
