/* One linear layer into SliM-LLM's mixed-precision groups (kernels/slim.h):
 * round-to-nearest, GPTQ, or SliM-LLM (SBA + SQC on top of GPTQ), as in
 * ../shared/methods/slimllm.md.
 *
 * - GPTQ: the damped Hessian H = 2/n X^T X is inverted through LAPACK's
 *   Cholesky, the upper Cholesky factor U of H^-1 drives column-by-column
 *   quantization with error feedback; block = group, no act-order. Each
 *   group's (d, m) per row is fit when the pass reaches the group, on the
 *   weights as the earlier groups' errors left them.
 * - SBA: groups sorted by salience sum w^2 / [H^-1]_jj^2; the p least salient
 *   get N-1 bits and the p most salient N+1 (so the mean stays exactly N);
 *   p is chosen by the KL divergence between softmax(X W^T) and
 *   softmax(X W_rtn^T) over calibration rows.
 * - SQC: per (row, group) a range scale tau in [1-lambda, 1+lambda] that
 *   minimizes the error of the salient weights (3 sigma) and of the rest,
 *   each averaged over its own count, so a few salient weights weigh as much
 *   as all the others. */
#ifndef KVQ_QUANT_GPTQ_H
#define KVQ_QUANT_GPTQ_H
#include <stdint.h>
#include "../core/fp16.h"
#include "../core/log.h"

typedef enum kvq_wq_method { KVQ_WQ_RTN, KVQ_WQ_GPTQ, KVQ_WQ_SLIM } kvq_wq_method;

typedef struct kvq_wq_params {
    kvq_wq_method method;
    int bits;           /* N: 2, 3, 4 */
    int group;          /* G: columns per group, a multiple of 32 dividing cols */
    float damp;         /* GPTQ dampening, fraction of the mean diagonal (0.01) */
    float sqc_lambda;   /* SQC's tau range (0.1) */
    int sqc_steps;      /* SQC's candidates (51) */
    int sba_candidates; /* at most this many values of p are scored (16) */
    int n_threads;
} kvq_wq_params;
kvq_wq_params kvq_wq_default_params(void);

typedef struct kvq_wq_report {
    double rel_err; /* ||dW X^T||^2 / ||W X^T||^2 on the sampled calibration rows (-1 without) */
    double kl;      /* SBA's KL at the chosen p (slim), else -1 */
    int p;          /* groups at N-1 (and at N+1) */
} kvq_wq_report;

/* Quantizes W (rows x cols, row-major f32). H (cols x cols, the mean of
 * x x^T over calibration rows) is needed by GPTQ and SliM. X (ns x cols):
 * sampled calibration rows, for SBA's KL and the reported error (optional
 * for RTN and GPTQ).
 * Writes bits[ng], codes (rows x cols*N/8 bytes) and dm (rows x ng x 2). */
kvq_status kvq_wq_matrix(const kvq_wq_params *p, const float *W, int64_t rows, int64_t cols, const float *H,
                         const float *X, int ns, int8_t *bits, uint8_t *codes, kvq_f16 *dm, kvq_wq_report *rep,
                         const kvq_logger *lg);

/* GPTQ (or RTN) into standard GGUF blocks every engine reads, each block fit
 * when the pass reaches it: q4_0 (ggml's scale rule: the largest-magnitude
 * value over -8) and q4_1 (min and range) in blocks of 32; q2_K, q3_K, q4_K and q5_K in
 * super-blocks of 256 (the type's own scale search, then GPTQ's codes).
 * out: rows x row_size(type). */
kvq_status kvq_wq_matrix_q4(const kvq_wq_params *p, int type, const float *W, int64_t rows, int64_t cols,
                            const float *H, const float *X, int ns, void *out, kvq_wq_report *rep,
                            const kvq_logger *lg);

/* The block kvq_wq_matrix_q4 writes type in (32, or 256 for the K types),
 * or 0 when it does not write that type. */
int kvq_wq_std_block(int type);

/* Helpers exposed for tests. */
/* Fits (d, m) of one group of n weights at width b with range scale tau. */
void kvq_wq_fit(const float *w, int n, int b, float tau, float *d, float *m);
static inline int kvq_wq_code(float w, float d, float m, int b) {
    if (!(d > 0)) return 0;
    float q = (w - m) / d + 0.5f;
    int qi = q < 0 ? 0 : (int)q;
    const int mx = (1 << b) - 1;
    return qi > mx ? mx : qi;
}
/* SBA's widths for a given p from group saliences: N-1 for the p least, N+1
 * for the p most salient. */
void kvq_wq_sba_bits(const double *salience, int ng, int N, int p, int8_t *bits);

#endif
