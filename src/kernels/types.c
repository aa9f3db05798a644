/* The type-trait table: names and block sizes for every GGUF type id, and the
 * kernels per instruction set. SIMD tables start from the scalar one and
 * override what they accelerate, so an ISA never lacks a kernel. */
#include "types.h"

#include <strings.h>

#include "../core/cpu.h"
#include "quant_ref.h"
#include "simd.h"
#include "slim.h"

typedef struct { const char *name; int32_t blck, size; } type_desc;

static const type_desc DESC[KVQ_TYPE_COUNT] = {
    [KVQ_TYPE_F32] = {"f32", 1, 4},
    [KVQ_TYPE_F16] = {"f16", 1, 2},
    [KVQ_TYPE_Q4_0] = {"q4_0", 32, 18},
    [KVQ_TYPE_Q4_1] = {"q4_1", 32, 20},
    [KVQ_TYPE_Q5_0] = {"q5_0", 32, 22},
    [KVQ_TYPE_Q5_1] = {"q5_1", 32, 24},
    [KVQ_TYPE_Q8_0] = {"q8_0", 32, 34},
    [KVQ_TYPE_Q8_1] = {"q8_1", 32, 36},
    [KVQ_TYPE_Q2_K] = {"q2_K", 256, 84},
    [KVQ_TYPE_Q3_K] = {"q3_K", 256, 110},
    [KVQ_TYPE_Q4_K] = {"q4_K", 256, 144},
    [KVQ_TYPE_Q5_K] = {"q5_K", 256, 176},
    [KVQ_TYPE_Q6_K] = {"q6_K", 256, 210},
    [KVQ_TYPE_Q8_K] = {"q8_K", 256, 292},
    [KVQ_TYPE_IQ4_NL] = {"iq4_nl", 32, 18},
    [KVQ_TYPE_IQ4_XS] = {"iq4_xs", 256, 136},
    [KVQ_TYPE_I8] = {"i8", 1, 1},
    [KVQ_TYPE_I16] = {"i16", 1, 2},
    [KVQ_TYPE_I32] = {"i32", 1, 4},
    [KVQ_TYPE_I64] = {"i64", 1, 8},
    [KVQ_TYPE_F64] = {"f64", 1, 8},
    [KVQ_TYPE_BF16] = {"bf16", 1, 2},
    /* codes only: 8 values take N bytes on average (slim.h) */
    [KVQ_TYPE_SLIM2] = {"slim2", 8, 2},
    [KVQ_TYPE_SLIM3] = {"slim3", 8, 3},
    [KVQ_TYPE_SLIM4] = {"slim4", 8, 4},
};

const char *kvq_type_name(int type) {
    if (type < 0 || type >= KVQ_TYPE_COUNT) return NULL;
    return DESC[type].name;
}
int kvq_type_parse(const char *name) {
    for (int t = 0; name && t < KVQ_TYPE_COUNT; t++)
        if (DESC[t].name && !strcasecmp(DESC[t].name, name)) return t;
    return -1;
}

int32_t kvq_type_blck(int type) { return kvq_type_name(type) ? DESC[type].blck : 0; }
int32_t kvq_type_size(int type) { return kvq_type_name(type) ? DESC[type].size : 0; }

size_t kvq_row_size(int type, int64_t n) {
    int32_t b = kvq_type_blck(type);
    if (b <= 0 || n < 0 || n % b) return 0;
    return (size_t)(n / b) * (size_t)DESC[type].size;
}

#define REF(T, ENUM, PARTNER)                                                                     \
    [ENUM] = {#T, 0, 0, PARTNER, kvq_##T##_to_float_ref, kvq_##T##_from_float_ref, kvq_##T##_vec_dot_ref}

static const kvq_type_traits SCALAR[KVQ_TYPE_COUNT] = {
    REF(f32, KVQ_TYPE_F32, KVQ_TYPE_F32),     REF(f16, KVQ_TYPE_F16, KVQ_TYPE_F32),
    REF(bf16, KVQ_TYPE_BF16, KVQ_TYPE_F32),   REF(q8_0, KVQ_TYPE_Q8_0, KVQ_TYPE_Q8_0),
    REF(q8_1, KVQ_TYPE_Q8_1, KVQ_TYPE_Q8_1),  REF(q4_0, KVQ_TYPE_Q4_0, KVQ_TYPE_Q8_0),
    REF(q4_1, KVQ_TYPE_Q4_1, KVQ_TYPE_Q8_1),  REF(q4_K, KVQ_TYPE_Q4_K, KVQ_TYPE_Q8_K),
    REF(q5_K, KVQ_TYPE_Q5_K, KVQ_TYPE_Q8_K),  REF(q6_K, KVQ_TYPE_Q6_K, KVQ_TYPE_Q8_K),
    REF(q8_K, KVQ_TYPE_Q8_K, KVQ_TYPE_Q8_K),
    REF(q5_0, KVQ_TYPE_Q5_0, KVQ_TYPE_Q8_0),  REF(q5_1, KVQ_TYPE_Q5_1, KVQ_TYPE_Q8_1),
    REF(iq4_nl, KVQ_TYPE_IQ4_NL, KVQ_TYPE_Q8_0), REF(iq4_xs, KVQ_TYPE_IQ4_XS, KVQ_TYPE_Q8_K),
    REF(q2_K, KVQ_TYPE_Q2_K, KVQ_TYPE_Q8_K),  REF(q3_K, KVQ_TYPE_Q3_K, KVQ_TYPE_Q8_K),
#define SLIM(T, ENUM) [ENUM] = {#T, 0, 0, KVQ_TYPE_F32, .matvec = &kvq_slim_kernel_ref, .companions = {"bits", "dm"}, \
                                .companion_types = {KVQ_TYPE_I8, KVQ_TYPE_F16}, \
                                .check_aux = kvq_slim_check}
    SLIM(slim2, KVQ_TYPE_SLIM2), SLIM(slim3, KVQ_TYPE_SLIM3), SLIM(slim4, KVQ_TYPE_SLIM4),
#undef SLIM
};

static kvq_type_traits TABLES[KVQ_ISA_COUNT][KVQ_TYPE_COUNT];

#include <pthread.h>
static pthread_once_t tables_once = PTHREAD_ONCE_INIT;

/* Filled once, then read-only: the SIMD rows are the scalar rows with the
 * accelerated entries replaced. */
static void build_tables(void) {
    for (int isa = 0; isa < KVQ_ISA_COUNT; isa++)
        for (int t = 0; t < KVQ_TYPE_COUNT; t++) {
            TABLES[isa][t] = SCALAR[t];
            if (SCALAR[t].to_float || SCALAR[t].matvec) {
                TABLES[isa][t].blck = DESC[t].blck;
                TABLES[isa][t].type_size = DESC[t].size;
            }
        }
#if defined(__x86_64__)
    kvq_simd_install_avx2(TABLES[KVQ_ISA_AVX2]);
    kvq_simd_install_avx2(TABLES[KVQ_ISA_AVX512]);
    kvq_simd_install_avx512(TABLES[KVQ_ISA_AVX512], kvq_cpu_vbmi());
#endif
}

const kvq_type_traits *kvq_traits_isa(kvq_type t, int isa) {
    if ((int)t < 0 || t >= KVQ_TYPE_COUNT || isa < 0 || isa >= KVQ_ISA_COUNT) return NULL;
    pthread_once(&tables_once, build_tables);
    static const void *const T[KVQ_ISA_COUNT] = {TABLES[KVQ_ISA_SCALAR], TABLES[KVQ_ISA_AVX2], TABLES[KVQ_ISA_AVX512]};
    const kvq_type_traits *table = kvq_isa_pick(isa, T);
    return table[t].to_float || table[t].matvec ? &table[t] : NULL;
}

const kvq_type_traits *kvq_traits(kvq_type t) { return kvq_traits_isa(t, kvq_isa_active()); }
