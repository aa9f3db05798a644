/* A vocabulary and its tokenizer, built from GGUF metadata, a llama2.c
 * tokenizer file or a Hugging Face tokenizer.json.
 *
 * Three encoders share one merge engine:
 *  - SPM:       SentencePiece-style; merge the adjacent pair whose joined text
 *               is a token with the highest score (llama, llama2.c vocabularies).
 *  - BPE:       merge by the rank of the pair in a merges list, on text where
 *               spaces are U+2581 (HF Llama-style tokenizer.json).
 *  - BYTE_BPE:  GPT-2 byte-level BPE with a regex pre-tokenizer (gpt2, llama3, qwen2). */
#ifndef KVQ_MODEL_VOCAB_H
#define KVQ_MODEL_VOCAB_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "../core/log.h"
#include "unicode.h"
#include "kvq.h"

typedef enum kvq_vocab_kind { KVQ_VOCAB_SPM, KVQ_VOCAB_BPE, KVQ_VOCAB_BYTE_BPE } kvq_vocab_kind;

enum kvq_tok_attr { KVQ_TOK_NORMAL = 1, KVQ_TOK_UNKNOWN = 2, KVQ_TOK_CONTROL = 3, KVQ_TOK_USER = 4,
                    KVQ_TOK_UNUSED = 5, KVQ_TOK_BYTE = 6 };

typedef struct kvq_vocab {
    kvq_vocab_kind kind;
    kvq_pretok pretok;
    int32_t n;
    char **text;         /* token texts, each NUL-terminated, in one arena */
    uint32_t *len;
    float *score;
    uint8_t *attr;
    char *arena;
    /* open-addressing hash: text -> id */
    int32_t *tab;
    uint32_t tab_mask;
    /* merges: (left id, right id) -> rank; open addressing on a 64-bit key */
    uint64_t *mkey;
    int32_t *mrank;
    uint32_t m_mask;
    int32_t n_merges;
    int32_t byte_tok[256]; /* <0xHH> tokens for byte fallback, -1 if absent */
    kvq_token bos, eos, eot, unk;
    bool add_bos, add_space_prefix;
    bool space_is_marker;  /* spaces are written U+2581 inside tokens */
    bool scores_repaired;
    kvq_normal normal;     /* applied to text before pre-tokenization (tokenizer.json's normalizer) */
    bool ignore_merges;    /* a pre-token that is itself a token is emitted whole (Llama 3) */
    bool fuse_unk;         /* consecutive unknown characters become one <unk> */
    /* byte pairs (a, b) that occur side by side in some token or merge: text
     * can be cut between any other two bytes and tokenize the same, which
     * bounds the merge engine's memory on long texts */
    uint8_t span_pair[65536 / 8];
    size_t chunk;          /* the size of those pieces (0: 64 KiB; tests set it) */
} kvq_vocab;

/* Building: start with n tokens, set each, then finish. */
kvq_status kvq_vocab_init(kvq_vocab *v, kvq_vocab_kind kind, int32_t n, size_t text_bytes, const kvq_logger *lg);
kvq_status kvq_vocab_set(kvq_vocab *v, int32_t id, const char *text, size_t len, float score, int attr,
                         const kvq_logger *lg);
kvq_status kvq_vocab_add_merge(kvq_vocab *v, const char *a, size_t alen, const char *b, size_t blen, int32_t rank,
                               const kvq_logger *lg);
kvq_status kvq_vocab_alloc_merges(kvq_vocab *v, int32_t n_merges, const kvq_logger *lg);
/* Indexes texts, checks byte tokens, repairs degenerate SPM scores. */
kvq_status kvq_vocab_finish(kvq_vocab *v, const kvq_logger *lg);
void kvq_vocab_free(kvq_vocab *v);

int32_t kvq_vocab_find(const kvq_vocab *v, const char *text, size_t len);

kvq_status kvq_vocab_encode(const kvq_vocab *v, const char *text, size_t len, bool add_bos, kvq_token *out, int cap,
                            int *n_out);
/* With parse_special, control and user-defined token texts in the input
 * (e.g. <|im_start|>) become those tokens. */
kvq_status kvq_vocab_encode_ex(const kvq_vocab *v, const char *text, size_t len, bool add_bos, bool parse_special,
                               kvq_token *out, int cap, int *n_out);
/* The same, also counting the characters that became <unk> (*n_unk). */
kvq_status kvq_vocab_encode_unk(const kvq_vocab *v, const char *text, size_t len, bool add_bos, bool parse_special,
                                kvq_token *out, int cap, int *n_out, int *n_unk);
int kvq_vocab_piece(const kvq_vocab *v, kvq_token prev, kvq_token tok, char *buf, int cap);

/* Parses "<0xHH>"; returns the byte or -1. */
int kvq_parse_byte_token(const char *s, size_t len);

#endif
