/* Sessions: a context saved to a file and restored, so a conversation
 * continues where it stopped without prefilling its prompt again.
 *
 *   "KVQS" u32 version  u64 model fingerprint
 *   i32 n_past  i32 tokens[n_past]
 *   u32 n_logits (0 or n_vocab)  f32 logits[n_logits]   (the last position's)
 *   the KV stream (kv_persist.c: spec, geometry, each layer's compressed slots)
 *   u64 checksum of everything before it
 *
 * The file is untrusted: every count is checked before it sizes anything,
 * the model must be the one it was saved from, and the checksum is verified
 * before the context is handed back; on any failure the context is empty. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "../core/hashstream.h"
#include "context.h"

#define SESSION_MAGIC "KVQS"
#define SESSION_VERSION 1u

static kvq_status save(const kvq_ctx *c, const kvq_kv_cache *kv, const char *path) {
    FILE *f = fopen(path, "wb");
    if (!f) return kvq_err(&c->lg, KVQ_ERR_IO, "cannot write session file '%s'", path);
    kvq_hashstream *hs = kvq_hashstream_open_writer(f);
    if (!hs) { fclose(f); return KVQ_ERR_NOMEM; }
    FILE *o = kvq_hashstream_file(hs);
    const uint32_t ver = SESSION_VERSION, nl = c->has_logits ? (uint32_t)c->m->hp.n_vocab : 0;
    const uint64_t fp = kvq_model_fingerprint(c->m);
    kvq_status st = KVQ_OK;
    if (fwrite(SESSION_MAGIC, 1, 4, o) != 4 || fwrite(&ver, 4, 1, o) != 1 || fwrite(&fp, 8, 1, o) != 1 ||
        fwrite(&c->n_past, 4, 1, o) != 1 || fwrite(c->tokens, 4, (size_t)c->n_past, o) != (size_t)c->n_past ||
        fwrite(&nl, 4, 1, o) != 1 || fwrite(c->logits, 4, nl, o) != nl)
        st = KVQ_ERR_IO;
    if (!st) st = kvq_kv_write(kv, o);
    uint64_t sum = kvq_hashstream_digest(hs);
    kvq_hashstream_close(hs);
    if (!st && fwrite(&sum, 8, 1, f) != 1) st = KVQ_ERR_IO;
    if (fclose(f) != 0 && !st) st = KVQ_ERR_IO;
    if (st) {
        remove(path);
        return kvq_err(&c->lg, st, "failed writing session file '%s'", path);
    }
    return KVQ_OK;
}

kvq_status kvq_ctx_save(const kvq_ctx *c, const char *path) {
    return kvq_ctx_save_as(c, path, NULL);
}

kvq_status kvq_ctx_save_as(const kvq_ctx *c, const char *path, const char *spec) {
    if (kvq_ctx_n_pending(c))
        return kvq_err(&c->lg, KVQ_ERR_ARG, "cannot save a session with %d speculative tokens pending",
                       kvq_ctx_n_pending(c));
    if (!spec) return save(c, c->kv, path);
    /* the cold tier: the cache converted into another codec (AQUA-KV's 2 bits) for the file only */
    if (kvq_kv_n(c->kv) != c->n_past)
        return kvq_err(&c->lg, KVQ_ERR_UNSUPPORTED,
                       "cannot save as '%s': %d of %d tokens were evicted, and conversion keeps positions by slot",
                       spec, c->n_past - kvq_kv_n(c->kv), c->n_past);
    kvq_kv_geom g = c->kv->g;
    kvq_kv_cache *tmp = NULL;
    char err[256] = "";
    kvq_status st = kvq_kv_cache_new(&g, spec, &c->lg, &tmp, err, sizeof err);
    if (st) return kvq_err(&c->lg, st, "session KV spec '%s': %s", spec, err);
    tmp->rope = c->kv->rope;
    tmp->rope_user = c->kv->rope_user;
    st = kvq_kv_convert(c->kv, tmp);
    if (!st) st = save(c, tmp, path);
    kvq_kv_cache_free(tmp);
    return st;
}

static kvq_status load(kvq_ctx *c, FILE *f, const char *path) {
    /* everything but the trailing 8-byte checksum goes through the hash */
    struct stat fs;
    if (fstat(fileno(f), &fs) != 0 || fs.st_size < 8)
        return kvq_err(&c->lg, KVQ_ERR_FORMAT, "'%s' is truncated or corrupt", path);
    kvq_hashstream *hs = kvq_hashstream_open_reader(f, (uint64_t)fs.st_size - 8);
    if (!hs) return KVQ_ERR_NOMEM;
    FILE *in = kvq_hashstream_file(hs);
    char magic[4];
    uint32_t ver, nl;
    uint64_t fp, sum;
    int32_t n_past;
    kvq_status st = KVQ_ERR_FORMAT;
    if (fread(magic, 1, 4, in) != 4 || memcmp(magic, SESSION_MAGIC, 4)) {
        kvq_err(&c->lg, st, "'%s' is not a kvq session file", path);
        goto out;
    }
    if (fread(&ver, 4, 1, in) != 1 || ver != SESSION_VERSION) {
        kvq_err(&c->lg, st, "'%s': session format version %u, this kvq reads version %u", path, ver,
                SESSION_VERSION);
        goto out;
    }
    if (fread(&fp, 8, 1, in) != 1 || fread(&n_past, 4, 1, in) != 1) {
        kvq_err(&c->lg, st, "'%s' is truncated or corrupt", path);
        goto out;
    }
    if (fp != kvq_model_fingerprint(c->m)) {
        st = kvq_err(&c->lg, KVQ_ERR_ARG, "'%s' was saved from another model (fingerprint %016llx, this model %016llx)",
                     path, (unsigned long long)fp, (unsigned long long)kvq_model_fingerprint(c->m));
        goto out;
    }
    if (n_past < 0 || n_past > c->n_ctx) {
        st = kvq_err(&c->lg, n_past < 0 ? KVQ_ERR_FORMAT : KVQ_ERR_CONTEXT_FULL,
                     "'%s' holds %d tokens, this context holds at most %d", path, n_past, c->n_ctx);
        goto out;
    }
    if (fread(c->tokens, 4, (size_t)n_past, in) != (size_t)n_past || fread(&nl, 4, 1, in) != 1) {
        kvq_err(&c->lg, st, "'%s' is truncated or corrupt", path);
        goto out;
    }
    for (int32_t i = 0; i < n_past; i++)
        if (c->tokens[i] < 0 || c->tokens[i] >= c->m->hp.n_vocab) {
            kvq_err(&c->lg, st, "'%s': token %d at position %d is outside the vocabulary", path, c->tokens[i], i);
            goto out;
        }
    if (nl != 0 && nl != (uint32_t)c->m->hp.n_vocab) {
        kvq_err(&c->lg, st, "'%s': bad logits row (%u values for a vocabulary of %d)", path, nl, c->m->hp.n_vocab);
        goto out;
    }
    if (fread(c->logits, 4, nl, in) != nl) {
        kvq_err(&c->lg, st, "'%s' is truncated or corrupt", path);
        goto out;
    }
    if ((st = kvq_kv_read(c->kv, in, path))) goto out;
    st = KVQ_ERR_FORMAT;
    if (kvq_kv_n(c->kv) > n_past) {
        kvq_err(&c->lg, st, "'%s': %d cached slots for %d positions", path, kvq_kv_n(c->kv), n_past);
        goto out;
    }
    if (fgetc(in) != EOF) { /* the parser must have taken every byte before the checksum */
        kvq_err(&c->lg, st, "'%s' is corrupt (trailing bytes)", path);
        goto out;
    }
    const uint64_t want = kvq_hashstream_digest(hs);
    if (fread(&sum, 8, 1, f) != 1 || sum != want || fgetc(f) != EOF) {
        kvq_err(&c->lg, st, "'%s' is corrupt (checksum mismatch or trailing bytes)", path);
        goto out;
    }
    c->n_past = c->n_past_final = n_past;
    c->has_logits = nl != 0;
    st = KVQ_OK;
out:
    kvq_hashstream_close(hs);
    return st;
}

kvq_status kvq_ctx_load(kvq_ctx *c, const char *path) {
    if (kvq_ctx_n_pending(c)) return kvq_err(&c->lg, KVQ_ERR_ARG, "speculative tokens are pending");
    kvq_status ost;
    FILE *f = kvq_fopen_read(path, &c->lg, &ost);
    if (!f) return ost;
    kvq_status st = load(c, f, path);
    fclose(f);
    if (st) {
        /* nothing half-restored: the context starts empty */
        kvq_kv_truncate(c->kv, 0);
        c->n_past = c->n_past_final = 0;
        c->has_logits = false;
    }
    return st;
}

const float *kvq_ctx_logits(const kvq_ctx *c) { return c->has_logits ? c->logits : NULL; }
