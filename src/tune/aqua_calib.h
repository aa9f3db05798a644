/* Internal pieces of AQUA-KV calibration that tests check on their own. */
#ifndef KVQ_TUNE_AQUA_CALIB_H
#define KVQ_TUNE_AQUA_CALIB_H
#include "kvq.h"

/* W [(dx+1) x C] minimizing ||[X 1] W - Y||^2 + lambda ||W||^2 over n rows,
 * lambda = 1e-3 * mean(diag([X 1]'[X 1])), by LAPACK's Cholesky solve. */
kvq_status kvq_ridge_fit(const float *X, int dx, const float *Y, int C, int n, double *W);

#endif
