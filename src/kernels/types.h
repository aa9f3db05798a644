/* Tensor types: GGUF-compatible ids, block layouts and the type-trait table.
 * Each quantized type pairs with an activation ("vec_dot partner") type, as in
 * ggml: activations are quantized once per row, then every weight row is
 * dotted against them with integer arithmetic. */
#ifndef KVQ_KERNELS_TYPES_H
#define KVQ_KERNELS_TYPES_H
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include "../core/fp16.h"

typedef enum kvq_type {
    KVQ_TYPE_F32 = 0,
    KVQ_TYPE_F16 = 1,
    KVQ_TYPE_Q4_0 = 2,
    KVQ_TYPE_Q4_1 = 3,
    KVQ_TYPE_Q5_0 = 6,
    KVQ_TYPE_Q5_1 = 7,
    KVQ_TYPE_Q8_0 = 8,
    KVQ_TYPE_Q8_1 = 9,
    KVQ_TYPE_Q2_K = 10,
    KVQ_TYPE_Q3_K = 11,
    KVQ_TYPE_Q4_K = 12,
    KVQ_TYPE_Q5_K = 13,
    KVQ_TYPE_Q6_K = 14,
    KVQ_TYPE_Q8_K = 15,
    KVQ_TYPE_IQ4_NL = 20,
    KVQ_TYPE_IQ4_XS = 23,
    KVQ_TYPE_I8 = 24,
    KVQ_TYPE_I16 = 25,
    KVQ_TYPE_I32 = 26,
    KVQ_TYPE_I64 = 27,
    KVQ_TYPE_F64 = 28,
    KVQ_TYPE_BF16 = 30,
    /* kvq's own ids, far from ggml's: SliM-LLM's mixed-precision groups of
     * average width 2, 3, 4 (slim.h); other engines do not know them */
    KVQ_TYPE_SLIM2 = 64,
    KVQ_TYPE_SLIM3 = 65,
    KVQ_TYPE_SLIM4 = 66,
    KVQ_TYPE_COUNT = 67
} kvq_type;

#define KVQ_QK8_0 32
#define KVQ_QK4_0 32
#define KVQ_QK4_1 32
#define KVQ_QK_K 256
#define KVQ_K_SCALE_SIZE 12

typedef struct { kvq_f16 d; int8_t qs[KVQ_QK8_0]; } kvq_block_q8_0;
typedef struct { kvq_f16 d; kvq_f16 s; int8_t qs[32]; } kvq_block_q8_1; /* s = d * sum(qs) */
typedef struct { kvq_f16 d; uint8_t qs[KVQ_QK4_0 / 2]; } kvq_block_q4_0;
typedef struct { kvq_f16 d; kvq_f16 m; uint8_t qs[KVQ_QK4_1 / 2]; } kvq_block_q4_1;
/* Q5_0/Q5_1: Q4_0/Q4_1 nibbles plus a fifth bit per value (bit j of the
 * little-endian word qh belongs to value j). */
typedef struct { kvq_f16 d; uint8_t qh[4]; uint8_t qs[16]; } kvq_block_q5_0;
typedef struct { kvq_f16 d; kvq_f16 m; uint8_t qh[4]; uint8_t qs[16]; } kvq_block_q5_1;
/* IQ4_NL: 4-bit indices into a fixed non-uniform grid (kvq_iq4nl_grid), one
 * fp16 scale per 32 values. */
typedef struct { kvq_f16 d; uint8_t qs[16]; } kvq_block_iq4_nl;
/* IQ4_XS: the same grid in super-blocks of 256, a 6-bit scale per 32 values
 * (low 4 bits in scales_l, high 2 in scales_h), offset by 32. */
typedef struct {
    kvq_f16 d;
    uint16_t scales_h;
    uint8_t scales_l[KVQ_QK_K / 64];
    uint8_t qs[KVQ_QK_K / 2];
} kvq_block_iq4_xs;
/* Q2_K: 2-bit codes, a 4-bit scale and 4-bit min per 16 values (low and high
 * nibble of scales[]), against the super-block's d and dmin. */
typedef struct {
    uint8_t scales[KVQ_QK_K / 16];
    uint8_t qs[KVQ_QK_K / 4];
    kvq_f16 d, dmin;
} kvq_block_q2_K;
/* Q3_K: 2 low bits in qs, the third in hmask, symmetric (-4..3); a 6-bit
 * signed scale per 16 values packed into 12 bytes. */
typedef struct {
    uint8_t hmask[KVQ_QK_K / 8];
    uint8_t qs[KVQ_QK_K / 4];
    uint8_t scales[12];
    kvq_f16 d;
} kvq_block_q3_K;
typedef struct {
    kvq_f16 d, dmin;
    uint8_t scales[KVQ_K_SCALE_SIZE];
    uint8_t qs[KVQ_QK_K / 2];
} kvq_block_q4_K;
typedef struct {
    kvq_f16 d, dmin;
    uint8_t scales[KVQ_K_SCALE_SIZE];
    uint8_t qh[KVQ_QK_K / 8];
    uint8_t qs[KVQ_QK_K / 2];
} kvq_block_q5_K;
typedef struct {
    uint8_t ql[KVQ_QK_K / 2];
    uint8_t qh[KVQ_QK_K / 4];
    int8_t scales[KVQ_QK_K / 16];
    kvq_f16 d;
} kvq_block_q6_K;
typedef struct {
    float d;
    int8_t qs[KVQ_QK_K];
    int16_t bsums[KVQ_QK_K / 16];
} kvq_block_q8_K;

/* Bit compatibility with GGUF files depends on these exact sizes. */
static_assert(sizeof(kvq_block_q8_0) == 34, "q8_0 block");
static_assert(sizeof(kvq_block_q8_1) == 36, "q8_1 block");
static_assert(sizeof(kvq_block_q4_0) == 18, "q4_0 block");
static_assert(sizeof(kvq_block_q4_1) == 20, "q4_1 block");
static_assert(sizeof(kvq_block_q5_0) == 22, "q5_0 block");
static_assert(sizeof(kvq_block_q5_1) == 24, "q5_1 block");
static_assert(sizeof(kvq_block_iq4_nl) == 18, "iq4_nl block");
static_assert(sizeof(kvq_block_iq4_xs) == 136, "iq4_xs block");
static_assert(sizeof(kvq_block_q2_K) == 84, "q2_K block");
static_assert(sizeof(kvq_block_q3_K) == 110, "q3_K block");
static_assert(sizeof(kvq_block_q4_K) == 144, "q4_K block");
static_assert(sizeof(kvq_block_q5_K) == 176, "q5_K block");
static_assert(sizeof(kvq_block_q6_K) == 210, "q6_K block");
static_assert(sizeof(kvq_block_q8_K) == 292, "q8_K block");

/* Row functions; n is a multiple of the block size. */
typedef void (*kvq_to_float_fn)(const void *src, float *dst, int64_t n);
typedef void (*kvq_from_float_fn)(const float *src, void *dst, int64_t n);
/* dot of one weight row (type T) with one activation row (T's partner type). */
typedef float (*kvq_vec_dot_fn)(const void *w, const void *x, int64_t n);

/* out[t] = dot(w, x + t * xstride) for t < nx <= KVQ_DOT_XN: one weight
 * row against several activation rows, the row's blocks unpacked once for
 * all of them (decode of several sequences in one pass). */
#define KVQ_DOT_XN 8
typedef void (*kvq_vec_dot_xn_fn)(const void *w, const void *x, size_t xstride, int nx, int64_t n, float *out);

/* y[r] = W[r] . act for n_rows consecutive rows (row_bytes apart). */
typedef void (*kvq_rows_fn)(const void *w, size_t row_bytes, int n_rows, const void *act, int64_t cols, float *y);

/* A whole-matrix decode product for a type whose kernel wants its own
 * activation layout (gemv_q4_0.h, gemv_q4_K.h): the activations are laid out
 * once per product in the order the weight nibbles come out of a block, and
 * the dot is inlined into a row loop (which matters for short rows). A mixed
 * precision type (per-group bit widths) enters the same way. */
struct kvq_matw;
typedef struct kvq_matvec_kernel {
    size_t (*act_size)(int64_t cols);
    void (*quant)(const float *x, void *act, int64_t cols);
    kvq_vec_dot_fn dot;
    kvq_rows_fn rows;
    /* For a type whose rows need their companions (dot and rows NULL):
     * y[r - r0] for rows r0..r1-1, and rows to f32 for the batched product. */
    void (*rows_w)(const struct kvq_matw *W, int64_t r0, int64_t r1, const void *act, float *y);
    void (*dequant)(const struct kvq_matw *W, int64_t r0, int64_t nr, float *dst);
} kvq_matvec_kernel;

/* Companion tensors a type needs beside its codes (per-group bit widths,
 * scales, zeros), stored in GGUF as "<name>.<suffix>" and bound by the loader
 * into kvq_tensor.aux in this order. */
#define KVQ_TENSOR_AUX 4

typedef struct kvq_type_traits {
    const char *name;
    int32_t blck;          /* elements per block */
    int32_t type_size;     /* bytes per block */
    kvq_type dot_type;     /* activation partner */
    kvq_to_float_fn to_float;
    kvq_from_float_fn from_float;
    kvq_vec_dot_fn vec_dot;
    kvq_vec_dot_xn_fn vec_dot_xn;    /* NULL: vec_dot once per activation row */
    const kvq_matvec_kernel *matvec; /* NULL: decode uses vec_dot on dot_type activations */
    const char *companions[KVQ_TENSOR_AUX]; /* suffixes of companion tensors (NULL-ended) */
    kvq_type companion_types[KVQ_TENSOR_AUX]; /* and the GGUF type each must have */
    /* Validates bound companions against the shape: NULL, or a message in msg. */
    const char *(*check_aux)(int type, int64_t cols, int64_t rows, const void *const *aux, const uint64_t *aux_bytes,
                             char *msg, size_t cap);
} kvq_type_traits;

/* Static description (names and sizes) of any type GGUF can hold; NULL for ids
 * that do not exist. Usable without kernels (parsers). */
const char *kvq_type_name(int type);
/* The type id of a name ("q4_0", "Q4_K"; case-insensitive), or -1. */
int kvq_type_parse(const char *name);
/* 0 when the type id is unknown or has no fixed block layout. */
int32_t kvq_type_blck(int type);
int32_t kvq_type_size(int type);
/* Bytes of a row of n elements; 0 if n is not a multiple of the block. */
size_t kvq_row_size(int type, int64_t n);

/* Kernel table for the active ISA (see cpu.h). NULL entries: type not
 * supported for compute. A type with companions (slim) has no to_float or
 * vec_dot: only its matvec entry computes with it. */
const kvq_type_traits *kvq_traits(kvq_type t);
/* Kernel table for a specific ISA; used by tests to compare paths. */
const kvq_type_traits *kvq_traits_isa(kvq_type t, int isa);

#endif
