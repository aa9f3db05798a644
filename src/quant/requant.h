/* Round-to-nearest requantization of weight matrices into a GGUF block type,
 * with the scalar reference quantizers (so the bytes are the same on every
 * ISA). It makes QuantSpec's draft weight set at load time, and
 * `kvq quantize --method rtn` writes the same bytes to a file, so a draft set
 * and the file agree exactly. */
#ifndef KVQ_QUANT_REQUANT_H
#define KVQ_QUANT_REQUANT_H
#include <stdbool.h>
#include <stdint.h>
#include "../core/log.h"
#include "../kernels/types.h"

/* Whether rows of `cols` values can be stored as `type` blocks. */
bool kvq_requant_fits(kvq_type type, int64_t cols);
/* rows x cols of src (type stype, src_row_bytes apart) into dst (type dtype,
 * kvq_row_size(dtype, cols) apart). */
kvq_status kvq_requant_rows(const void *src, kvq_type stype, size_t src_row_bytes, int64_t cols, int64_t rows,
                            kvq_type dtype, void *dst, int n_threads);
/* Which GGUF tensors a requantization touches: the layers' seven matrices,
 * the output head, and the token embedding when the head is tied to it
 * (llama.cpp's names). */
bool kvq_requant_gguf_name(const char *name, bool tied_output);
/* Writes a copy of a GGUF model whose large matrices are requantized to
 * `type` (those whose rows do not divide into its blocks keep theirs). */
kvq_status kvq_quantize_rtn_gguf(const char *in, const char *out, kvq_type type, int n_threads,
                                 const kvq_logger *lg);

#endif
