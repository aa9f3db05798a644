/* A stdio stream that hashes every byte that passes through it, on top of
 * another stream: a session file gets a checksum in one pass, written as it
 * is produced and verified as it is parsed, with no second read of a file
 * that can be gigabytes. The hash (64-bit words, multiply-xorshift) detects
 * corruption; it is not cryptographic. */
#ifndef KVQ_CORE_HASHSTREAM_H
#define KVQ_CORE_HASHSTREAM_H
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

typedef struct kvq_hashstream kvq_hashstream;

/* A writing stream: what is written goes to `under` and into the hash. */
kvq_hashstream *kvq_hashstream_open_writer(FILE *under);
/* A buffered reading stream that takes at most `limit` bytes of `under` and
 * then reports end of file: a parser reads through it at stdio speed, and
 * once it has read all `limit` bytes (fgetc gives EOF), the digest covers
 * exactly them and `under` stands right after them (at a trailing checksum).
 * An unbuffered stream would stop at what the parser took, but glibc reads
 * such a stream a byte at a time: 20 MB/s, 55 s for a 1 GiB session. */
kvq_hashstream *kvq_hashstream_open_reader(FILE *under, uint64_t limit);
FILE *kvq_hashstream_file(kvq_hashstream *h);
/* Flushes the stream and returns the hash of the bytes so far. */
uint64_t kvq_hashstream_digest(kvq_hashstream *h);
/* Closes the hashing stream (not the one under it). */
void kvq_hashstream_close(kvq_hashstream *h);

#endif
