/* The Unicode a tokenizer needs: UTF-8 stepping, the general categories of
 * pre-tokenizer rules and normalization forms (both from utf8proc), and
 * GPT-2's byte <-> codepoint map. */
#ifndef KVQ_MODEL_UNICODE_H
#define KVQ_MODEL_UNICODE_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Length of the UTF-8 sequence starting at s (1 for an invalid byte, so that
 * invalid input still advances byte by byte). */
int      kvq_utf8_len(const char *s, size_t avail);
uint32_t kvq_utf8_decode(const char *s, size_t avail, int *len);
int      kvq_utf8_encode(uint32_t cp, char out[4]);

#include "../core/log.h"

bool kvq_cp_is_letter(uint32_t cp);
bool kvq_cp_is_number(uint32_t cp);
bool kvq_cp_is_space(uint32_t cp);

typedef enum kvq_normal { KVQ_NORMAL_NONE, KVQ_NORMAL_NFC, KVQ_NORMAL_NFD, KVQ_NORMAL_NFKC, KVQ_NORMAL_NFKD } kvq_normal;
/* text in the given normalization form, into a new heap buffer *out (NULL
 * and nothing to free for KVQ_NORMAL_NONE). Invalid UTF-8 bytes are kept. */
kvq_status kvq_unicode_normalize(kvq_normal form, const char *text, size_t len, char **out, size_t *out_len);

/* GPT-2 byte-level BPE maps every byte to a printable codepoint. */
uint32_t kvq_byte_to_cp(uint8_t b);
int      kvq_cp_to_byte(uint32_t cp); /* -1 if cp is not in the map */

typedef enum kvq_pretok { KVQ_PRETOK_NONE, KVQ_PRETOK_GPT2, KVQ_PRETOK_LLAMA3, KVQ_PRETOK_QWEN2 } kvq_pretok;

/* Splits text into pre-tokenizer words following the named regex; calls
 * fn(start, len) for each word in order. */
void kvq_pretokenize(kvq_pretok kind, const char *text, size_t len,
                     void (*fn)(void *user, size_t start, size_t len), void *user);

#endif
