/* Hugging Face folder: config.json + model.safetensors (or sharded, with
 * model.safetensors.index.json) + tokenizer.json. Weights are used in place
 * (F32/F16/BF16); HF keeps Q/K rows unpermuted, so RoPE rotates halves. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <sys/stat.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../core/nesting.h"
#include "../io/safetensors.h"
#include "model.h"

#define HF_MAX_JSON (256u << 20)
#define HF_MAX_DEPTH 64
#define MARKER_UTF8 "\xe2\x96\x81" /* U+2581, the visible space of SentencePiece-style vocabularies */
#define HF_MAX_SHARDS 64

static cJSON *read_json(struct kvq_model *m, const char *dir, const char *file, bool required, kvq_status *st) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    char *txt;
    size_t len;
    struct stat sb;
    if (stat(path, &sb) != 0) {
        *st = required ? kvq_err(&m->lg, KVQ_ERR_IO, "cannot open '%s': %s", path, strerror(errno)) : KVQ_OK;
        return NULL;
    }
    if ((*st = kvq_read_file(path, HF_MAX_JSON, &txt, &len, &m->lg))) return NULL;
    /* tokenizer.json nests about 6 levels (normalizer sequences); cJSON
     * recurses once per level */
    const int depth = kvq_nesting_depth(txt, len, 1);
    if (depth > HF_MAX_DEPTH) {
        free(txt);
        *st = kvq_err(&m->lg, KVQ_ERR_FORMAT, "'%s' nests %d levels deep; kvq reads at most %d", path, depth,
                      HF_MAX_DEPTH);
        return NULL;
    }
    cJSON *j = cJSON_ParseWithLength(txt, len);
    free(txt);
    if (!j || !cJSON_IsObject(j)) {
        cJSON_Delete(j);
        *st = kvq_err(&m->lg, KVQ_ERR_FORMAT, "'%s' is not a JSON object", path);
        return NULL;
    }
    *st = KVQ_OK;
    return j;
}

static bool jint(const cJSON *o, const char *k, int64_t lo, int64_t hi, int32_t *out) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, k);
    if (cJSON_IsArray(x)) x = x->child; /* eos_token_id may be a list */
    if (!cJSON_IsNumber(x) || x->valuedouble < (double)lo || x->valuedouble > (double)hi) return false;
    *out = (int32_t)x->valuedouble;
    return true;
}

/* config.json's numbers, each checked and named: absent takes the default
 * (or is an error when required); present but wrong is always an error. */
static bool cfg_int(struct kvq_model *m, const cJSON *o, const char *k, int64_t lo, int64_t hi, bool required,
                    int32_t *out, kvq_status *st) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!x || cJSON_IsNull(x)) {
        if (required) *st = kvq_err(&m->lg, KVQ_ERR_FORMAT, "config.json lacks %s", k);
        return !required;
    }
    if (!cJSON_IsNumber(x)) {
        *st = kvq_err(&m->lg, KVQ_ERR_FORMAT, "config.json %s is not a number", k);
        return false;
    }
    const double v = x->valuedouble;
    if (v != floor(v) || v < (double)lo || v > (double)hi) {
        *st = kvq_err(&m->lg, KVQ_ERR_FORMAT, "config.json %s is %.17g; it must be an integer from %lld to %lld", k, v,
                      (long long)lo, (long long)hi);
        return false;
    }
    *out = (int32_t)v;
    return true;
}

static bool cfg_float(struct kvq_model *m, const cJSON *o, const char *where, const char *k, double lo, float *out,
                      kvq_status *st) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!x || cJSON_IsNull(x)) return true;
    if (!cJSON_IsNumber(x) || !isfinite(x->valuedouble) || x->valuedouble < lo || !isfinite((float)x->valuedouble)) {
        *st = kvq_err(&m->lg, KVQ_ERR_FORMAT, "config.json %s%s must be a finite number of at least %g", where, k, lo);
        return false;
    }
    *out = (float)x->valuedouble;
    return true;
}

static kvq_status open_shard(struct kvq_model *m, const char *dir, const char *file, kvq_safetensors *out) {
    char path[4096];
    if (strchr(file, '/') || strstr(file, ".."))
        return kvq_err(&m->lg, KVQ_ERR_FORMAT, "shard name '%.64s' is not a plain file name", file);
    snprintf(path, sizeof path, "%s/%s", dir, file);
    if (m->n_shards >= HF_MAX_SHARDS) return kvq_err(&m->lg, KVQ_ERR_UNSUPPORTED, "more than %d shards", HF_MAX_SHARDS);
    kvq_mapfile *mf = &m->shards[m->n_shards];
    kvq_status st = kvq_mapfile_open(path, mf, &m->lg);
    if (st) return st;
    m->n_shards++;
    return kvq_safetensors_parse(mf->data, mf->size, out, &m->lg);
}

typedef struct hf_weights { kvq_safetensors *sh; int n; } hf_weights;

static const kvq_st_tensor *find_w(const hf_weights *w, const char *name) {
    for (int i = 0; i < w->n; i++) {
        const kvq_st_tensor *t = kvq_safetensors_find(&w->sh[i], name);
        if (t) return t;
    }
    return NULL;
}

static kvq_status weight(struct kvq_model *m, const hf_weights *w, kvq_tensor *t, const char *name, int64_t n_in,
                         int64_t n_out, bool required) {
    const kvq_st_tensor *s = find_w(w, name);
    if (!s) return required ? kvq_err(&m->lg, KVQ_ERR_FORMAT, "tensor '%s' is missing", name) : KVQ_OK;
    kvq_type ty;
    if (!strcmp(s->dtype, "F32")) ty = KVQ_TYPE_F32;
    else if (!strcmp(s->dtype, "F16")) ty = KVQ_TYPE_F16;
    else if (!strcmp(s->dtype, "BF16")) ty = KVQ_TYPE_BF16;
    else return kvq_err(&m->lg, KVQ_ERR_UNSUPPORTED, "tensor '%s' has dtype %s (F32, F16, BF16 supported)", name, s->dtype);
    int64_t ne0 = s->n_dims == 2 ? s->shape[1] : s->n_dims == 1 ? s->shape[0] : -1;
    int64_t ne1 = s->n_dims == 2 ? s->shape[0] : 1;
    kvq_status st = kvq_tensor_view(m, t, name, ty, s->data, ne0, ne1, n_in, n_out);
    if (st || n_out != 1 || ty == KVQ_TYPE_F32) return st;
    /* vectors (norms, biases) are used as f32 */
    float *buf = malloc((size_t)n_in * sizeof(float));
    if ((st = kvq_model_own(m, buf))) return st;
    kvq_traits(ty)->to_float(t->data, buf, n_in);
    return kvq_tensor_view(m, t, name, KVQ_TYPE_F32, buf, n_in, 1, n_in, 1);
}

/* tokenizer_config.json's chat template (optional): kept for
 * kvq_model_meta_str("tokenizer.chat_template"), as a GGUF carries it. A
 * template given as a list of named templates is not read. */
static kvq_status load_chat_template(struct kvq_model *m, const char *dir) {
    kvq_status st;
    cJSON *j = read_json(m, dir, "tokenizer_config.json", false, &st);
    if (!j) return st;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "chat_template");
    if (cJSON_IsString(t)) {
        const size_t n = strlen(t->valuestring);
        char *c = malloc(n + 1);
        if (!(st = kvq_model_own(m, c))) { /* it frees c when it cannot keep it */
            memcpy(c, t->valuestring, n + 1);
            m->chat_template = c;
            m->chat_template_len = n;
        }
    }
    cJSON_Delete(j);
    return st;
}

/* ------------------------------------------------------- tokenizer.json */

static bool is_type(const cJSON *o, const char *type) {
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "type");
    return cJSON_IsString(t) && !strcmp(t->valuestring, type);
}

/* Finds a component of the given type, directly or inside a Sequence. */
static const cJSON *find_component(const cJSON *c, const char *type) {
    if (!c || !cJSON_IsObject(c)) return NULL;
    if (is_type(c, type)) return c;
    const char *lists[] = {"pretokenizers", "normalizers", "decoders", "processors"};
    for (int i = 0; i < 4; i++) {
        const cJSON *l = cJSON_GetObjectItemCaseSensitive(c, lists[i]);
        for (const cJSON *x = l ? l->child : NULL; x; x = x->next) {
            const cJSON *r = find_component(x, type);
            if (r) return r;
        }
    }
    return NULL;
}

static const char *split_pattern(const cJSON *pre) {
    const cJSON *sp = find_component(pre, "Split");
    const cJSON *pat = sp ? cJSON_GetObjectItemCaseSensitive(sp, "pattern") : NULL;
    const cJSON *re = pat ? cJSON_GetObjectItemCaseSensitive(pat, "Regex") : NULL;
    return cJSON_IsString(re) ? re->valuestring : NULL;
}

/* Calls fn on each component of a normalizer or pre-tokenizer, inside
 * Sequences. */
static void each_component(const cJSON *c, const char *list, void (*fn)(struct kvq_model *, const cJSON *, void *),
                           struct kvq_model *m, void *user) {
    if (!cJSON_IsObject(c)) return;
    if (is_type(c, "Sequence")) {
        const cJSON *l = cJSON_GetObjectItemCaseSensitive(c, list);
        for (const cJSON *x = l ? l->child : NULL; x; x = x->next) each_component(x, list, fn, m, user);
        return;
    }
    fn(m, c, user);
}

static const char *type_of(const cJSON *c) {
    const char *t = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(c, "type"));
    return t ? t : "(untyped)";
}

/* Every normalizer is applied or named: one kvq skipped would tokenize the
 * texts it changes differently from Hugging Face, silently. */
static void normalizer(struct kvq_model *m, const cJSON *c, void *user) {
    kvq_vocab *v = user;
    const char *t = type_of(c);
    static const struct { const char *name; kvq_normal form; } forms[] = {
        {"NFC", KVQ_NORMAL_NFC}, {"NFD", KVQ_NORMAL_NFD}, {"NFKC", KVQ_NORMAL_NFKC}, {"NFKD", KVQ_NORMAL_NFKD}};
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++)
        if (!strcmp(t, forms[i].name)) {
            v->normal = forms[i].form;
            return;
        }
    if (!strcmp(t, "Prepend") && v->kind == KVQ_VOCAB_BPE) return; /* the SPM-style space prefix */
    if (!strcmp(t, "Replace") && v->kind == KVQ_VOCAB_BPE) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(c, "pattern");
        const char *from = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(pat, "String"));
        const char *to = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(c, "content"));
        if (from && to && !strcmp(from, " ") && !strcmp(to, MARKER_UTF8)) return;
    }
    kvq_logf(&m->lg, KVQ_LOG_WARN,
             "tokenizer.json: the %s normalizer is not implemented and is skipped; texts it would change tokenize "
             "differently from Hugging Face", t);
}

static void pretokenizer(struct kvq_model *m, const cJSON *c, void *user) {
    const kvq_vocab *v = user;
    const char *t = type_of(c);
    if (!strcmp(t, "Metaspace") && v->kind == KVQ_VOCAB_BPE) return;
    if (!strcmp(t, "ByteLevel")) {
        if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "add_prefix_space")))
            kvq_logf(&m->lg, KVQ_LOG_WARN, "tokenizer.json: ByteLevel add_prefix_space is not implemented; a text "
                                           "that does not start with a space tokenizes differently");
        return;
    }
    if (!strcmp(t, "Split")) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(c, "pattern");
        const char *re = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(pat, "Regex"));
        if (re && v->pretok != KVQ_PRETOK_GPT2) return; /* a pattern kvq recognised */
        kvq_logf(&m->lg, KVQ_LOG_WARN,
                 "tokenizer.json: a Split pre-tokenizer with a pattern kvq does not know; splitting as GPT-2 does, "
                 "so some texts tokenize differently from Hugging Face");
        return;
    }
    kvq_logf(&m->lg, KVQ_LOG_WARN,
             "tokenizer.json: the %s pre-tokenizer is not implemented and is skipped; texts it would split tokenize "
             "differently from Hugging Face", t);
}

static kvq_status load_tokenizer_json(struct kvq_model *m, const char *dir, const cJSON *cfg) {
    const kvq_logger *lg = &m->lg;
    kvq_status st;
    cJSON *j = read_json(m, dir, "tokenizer.json", !m->vocab_only, &st);
    if (!j) return st;
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(j, "model");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(j, "added_tokens");
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(j, "pre_tokenizer");
    const cJSON *norm = cJSON_GetObjectItemCaseSensitive(j, "normalizer");
    const cJSON *post = cJSON_GetObjectItemCaseSensitive(j, "post_processor");
    if (!model || !is_type(model, "BPE")) {
        cJSON_Delete(j);
        return kvq_err(lg, KVQ_ERR_UNSUPPORTED, "tokenizer.json: only BPE models are supported");
    }
    if (!cJSON_IsObject(vocab) || (merges && !cJSON_IsArray(merges))) {
        cJSON_Delete(j);
        return kvq_err(lg, KVQ_ERR_FORMAT, "tokenizer.json: model.vocab / model.merges malformed");
    }
    static const char *const affixes[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        const char *a = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(model, affixes[i]));
        if (a && *a) {
            cJSON_Delete(j);
            return kvq_err(lg, KVQ_ERR_UNSUPPORTED, "tokenizer.json: BPE with a %s ('%.16s') is not supported",
                           affixes[i], a);
        }
    }
    const cJSON *drop = cJSON_GetObjectItemCaseSensitive(model, "dropout");
    if (cJSON_IsNumber(drop) && drop->valuedouble > 0)
        kvq_logf(lg, KVQ_LOG_WARN, "tokenizer.json: BPE dropout %g is a training-time option; kvq tokenizes without it",
                 drop->valuedouble);
    int32_t n = 0;
    size_t bytes = 0;
    for (int pass = 0; pass < 2; pass++) {
        const cJSON *lst = pass ? added : vocab;
        for (const cJSON *e = lst ? lst->child : NULL; e; e = e->next) {
            const cJSON *idj = pass ? cJSON_GetObjectItemCaseSensitive(e, "id") : e;
            const cJSON *txt = pass ? cJSON_GetObjectItemCaseSensitive(e, "content") : NULL;
            const char *s = pass ? (cJSON_IsString(txt) ? txt->valuestring : NULL) : e->string;
            if (!s) {
                cJSON_Delete(j);
                return kvq_err(lg, KVQ_ERR_FORMAT, "tokenizer.json: an added_tokens entry has no content string");
            }
            if (!cJSON_IsNumber(idj) || idj->valuedouble < 0 || idj->valuedouble >= (1 << 22) ||
                idj->valuedouble != floor(idj->valuedouble)) {
                st = kvq_err(lg, KVQ_ERR_FORMAT,
                             "tokenizer.json: token '%.40s' has id %.17g; ids are integers from 0 to %d", s,
                             cJSON_IsNumber(idj) ? idj->valuedouble : -1.0, (1 << 22) - 1);
                cJSON_Delete(j);
                return st;
            }
            if ((int32_t)idj->valuedouble + 1 > n) n = (int32_t)idj->valuedouble + 1;
            bytes += strlen(s);
        }
    }
    if (n == 0) {
        cJSON_Delete(j);
        return kvq_err(lg, KVQ_ERR_FORMAT, "tokenizer.json has an empty vocabulary");
    }
    const cJSON *bl = find_component(pre, "ByteLevel");
    kvq_vocab_kind kind = bl ? KVQ_VOCAB_BYTE_BPE : KVQ_VOCAB_BPE;
    kvq_vocab *v = &m->vocab;
    if ((st = kvq_vocab_init(v, kind, n, bytes, lg))) { cJSON_Delete(j); return st; }
    m->has_vocab = true;
    /* ids may be sparse or unordered: gather texts by id first */
    const char **txt = calloc((size_t)n, sizeof *txt);
    uint8_t *attr = calloc((size_t)n, 1);
    if (!txt || !attr) { free(txt); free(attr); cJSON_Delete(j); return KVQ_ERR_NOMEM; }
    for (const cJSON *e = vocab->child; e && !st; e = e->next) {
        const int32_t id = (int32_t)e->valuedouble;
        if (txt[id])
            st = kvq_err(lg, KVQ_ERR_FORMAT, "tokenizer.json: id %d is given to both '%.40s' and '%.40s'", id, txt[id],
                         e->string);
        txt[id] = e->string;
        attr[id] = KVQ_TOK_NORMAL;
    }
    for (const cJSON *e = added ? added->child : NULL; e && !st; e = e->next) {
        int32_t id = (int32_t)cJSON_GetObjectItemCaseSensitive(e, "id")->valuedouble;
        const char *c = cJSON_GetObjectItemCaseSensitive(e, "content")->valuestring;
        /* an added token may repeat its vocabulary entry, but not rename it */
        if (txt[id] && strcmp(txt[id], c))
            st = kvq_err(lg, KVQ_ERR_FORMAT, "tokenizer.json: id %d is given to both '%.40s' and added token '%.40s'",
                         id, txt[id], c);
        txt[id] = c;
        attr[id] = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "special")) ? KVQ_TOK_CONTROL : KVQ_TOK_USER;
    }
    for (int32_t i = 0; i < n && !st; i++)
        st = kvq_vocab_set(v, i, txt[i] ? txt[i] : "", txt[i] ? strlen(txt[i]) : 0, 0.0f,
                           attr[i] ? attr[i] : KVQ_TOK_UNUSED, lg);
    free(txt);
    free(attr);
    v->ignore_merges = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "ignore_merges"));
    v->fuse_unk = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "fuse_unk"));
    if (!st) {
        if (kind == KVQ_VOCAB_BYTE_BPE) {
            const char *re = split_pattern(pre);
            v->pretok = KVQ_PRETOK_GPT2;
            if (re && strstr(re, "\\p{N}{1,3}")) v->pretok = KVQ_PRETOK_LLAMA3;
            else if (re && strstr(re, "[^\\r\\n\\p{L}\\p{N}]?\\p{L}+")) v->pretok = KVQ_PRETOK_QWEN2;
        } else {
            const cJSON *ms = find_component(pre, "Metaspace");
            const cJSON *pp = find_component(norm, "Prepend");
            const cJSON *rp = find_component(norm, "Replace");
            v->space_is_marker = ms || rp;
            v->add_space_prefix = pp || ms;
        }
        int32_t id;
        if (v->bos < 0 && jint(cfg, "bos_token_id", 0, n - 1, &id)) v->bos = id;
        if (jint(cfg, "eos_token_id", 0, n - 1, &id)) v->eos = id;
        const cJSON *eos_list = cJSON_GetObjectItemCaseSensitive(cfg, "eos_token_id");
        if (cJSON_IsArray(eos_list) && cJSON_GetArraySize(eos_list) > 1 && cJSON_IsNumber(eos_list->child->next) &&
            eos_list->child->next->valuedouble >= 0 && eos_list->child->next->valuedouble < n)
            v->eot = (int32_t)eos_list->child->next->valuedouble;
        each_component(norm, "normalizers", normalizer, m, v);
        each_component(pre, "pretokenizers", pretokenizer, m, v);
        st = kvq_vocab_finish(v, lg);
        /* without byte_fallback an unknown character is <unk>, even where
         * <0xHH> tokens exist */
        if (!st && kind == KVQ_VOCAB_BPE && !cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "byte_fallback")))
            for (int b = 0; b < 256; b++) v->byte_tok[b] = -1;
    }
    if (!st) { /* lookups by text need the index kvq_vocab_finish built */
        const cJSON *unk = cJSON_GetObjectItemCaseSensitive(model, "unk_token");
        if (cJSON_IsString(unk)) v->unk = kvq_vocab_find(v, unk->valuestring, strlen(unk->valuestring));
        /* a post-processor template that starts with a special token adds BOS */
        const cJSON *tp = find_component(post, "TemplateProcessing");
        const cJSON *single = tp ? cJSON_GetObjectItemCaseSensitive(tp, "single") : NULL;
        const cJSON *first = single ? single->child : NULL;
        const cJSON *spt = first ? cJSON_GetObjectItemCaseSensitive(first, "SpecialToken") : NULL;
        const cJSON *sid = spt ? cJSON_GetObjectItemCaseSensitive(spt, "id") : NULL;
        if (cJSON_IsString(sid)) {
            int32_t b = kvq_vocab_find(v, sid->valuestring, strlen(sid->valuestring));
            if (b >= 0) {
                v->bos = b;
                v->add_bos = true;
            }
        }
    }
    if (!st && merges) {
        int32_t nm = cJSON_GetArraySize(merges), r = 0;
        st = kvq_vocab_alloc_merges(v, nm, lg);
        for (const cJSON *e = merges->child; e && !st; e = e->next, r++) {
            if (cJSON_IsString(e)) {
                const char *s = e->valuestring, *sp = strchr(s, ' ');
                if (!sp || sp == s || !sp[1]) { st = kvq_err(lg, KVQ_ERR_FORMAT, "tokenizer.json: merge %d malformed", r); break; }
                st = kvq_vocab_add_merge(v, s, (size_t)(sp - s), sp + 1, strlen(sp + 1), r, lg);
            } else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 && cJSON_IsString(e->child) &&
                       cJSON_IsString(e->child->next)) {
                const char *a = e->child->valuestring, *b = e->child->next->valuestring;
                st = kvq_vocab_add_merge(v, a, strlen(a), b, strlen(b), r, lg);
            } else {
                st = kvq_err(lg, KVQ_ERR_FORMAT, "tokenizer.json: merge %d malformed", r);
            }
        }
    }
    cJSON_Delete(j);
    return st;
}

kvq_status kvq_load_hf(struct kvq_model *m, const char *dir) {
    const kvq_logger *lg = &m->lg;
    snprintf(m->format, sizeof m->format, "hf");
    kvq_status st;
    /* a folder with only tokenizer.json serves tokenizing (kvq tokenize -m DIR) */
    char tpath[4096];
    snprintf(tpath, sizeof tpath, "%s/tokenizer.json", dir);
    struct stat sb;
    const bool tokenizer_only = m->vocab_only && stat(tpath, &sb) == 0 &&
                                (snprintf(tpath, sizeof tpath, "%s/config.json", dir), stat(tpath, &sb) != 0);
    cJSON *cfg = tokenizer_only ? NULL : read_json(m, dir, "config.json", true, &st);
    if (tokenizer_only) {
        snprintf(m->arch, sizeof m->arch, "tokenizer");
        if ((st = load_tokenizer_json(m, dir, NULL))) return st;
        m->hp.n_vocab = m->vocab.n;
        return KVQ_OK;
    }
    if (!cfg) return st;
    hf_weights w = {0};
    const char *mt = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(cfg, "model_type"));
    kvq_hparams *h = &m->hp;
    if (!mt || (strcmp(mt, "llama") && strcmp(mt, "mistral") && strcmp(mt, "qwen2"))) {
        st = kvq_err(lg, KVQ_ERR_UNSUPPORTED, "config.json model_type '%.32s' is not supported (llama, mistral, qwen2)",
                     mt ? mt : "(none)");
        goto done;
    }
    snprintf(m->arch, sizeof m->arch, "%s", mt);
    const char *nm = strrchr(dir, '/');
    snprintf(m->name, sizeof m->name, "%s", nm && nm[1] ? nm + 1 : dir);
    h->n_ctx_train = 2048;
    h->norm_eps = 1e-6f;
    h->rope_theta = 10000.0f;
    if (!cfg_int(m, cfg, "hidden_size", 1, 1 << 16, true, &h->n_embd, &st) ||
        !cfg_int(m, cfg, "num_hidden_layers", 1, 1024, true, &h->n_layer, &st) ||
        !cfg_int(m, cfg, "num_attention_heads", 1, 1024, true, &h->n_head, &st) ||
        !cfg_int(m, cfg, "intermediate_size", 1, 1 << 20, true, &h->n_ff, &st) ||
        !cfg_int(m, cfg, "vocab_size", 1, 1 << 22, true, &h->n_vocab, &st))
        goto done;
    h->n_head_kv = h->n_head;
    h->head_dim = 0;
    if (!cfg_int(m, cfg, "num_key_value_heads", 1, 1024, false, &h->n_head_kv, &st) ||
        !cfg_int(m, cfg, "head_dim", 2, 1024, false, &h->head_dim, &st) ||
        !cfg_int(m, cfg, "max_position_embeddings", 1, 1 << 24, false, &h->n_ctx_train, &st) ||
        !cfg_float(m, cfg, "", "rms_norm_eps", 0, &h->norm_eps, &st) ||
        !cfg_float(m, cfg, "", "rope_theta", 1e-30, &h->rope_theta, &st))
        goto done;
    if (!h->head_dim) {
        if (h->n_embd % h->n_head) {
            st = kvq_err(lg, KVQ_ERR_FORMAT, "config.json hidden_size %d is not divisible by num_attention_heads %d",
                         h->n_embd, h->n_head);
            goto done;
        }
        h->head_dim = h->n_embd / h->n_head;
    } else if ((int64_t)h->head_dim * h->n_head != h->n_embd) {
        /* legitimate (Mistral NeMo: 32 heads of 128 over a hidden size of 5120), but worth a word */
        kvq_logf(lg, KVQ_LOG_WARN,
                 "config.json head_dim %d times num_attention_heads %d is %lld, not hidden_size %d; kvq follows head_dim",
                 h->head_dim, h->n_head, (long long)h->head_dim * h->n_head, h->n_embd);
    }
    if (h->n_head_kv > h->n_head || h->n_head % h->n_head_kv) {
        st = kvq_err(lg, KVQ_ERR_FORMAT, "config.json num_attention_heads %d is not a multiple of num_key_value_heads %d",
                     h->n_head, h->n_head_kv);
        goto done;
    }
    h->n_rot = h->head_dim;
    h->rope_freq_scale = 1.0f;
    h->rope_neox = true;
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(cfg, "rope_scaling");
    if (rs && !cJSON_IsNull(rs) && !cJSON_IsObject(rs)) {
        st = kvq_err(lg, KVQ_ERR_FORMAT, "config.json rope_scaling must be an object or null");
        goto done;
    }
    if (cJSON_IsObject(rs)) {
        const cJSON *tyj = cJSON_GetObjectItemCaseSensitive(rs, "rope_type");
        if (!tyj) tyj = cJSON_GetObjectItemCaseSensitive(rs, "type");
        const char *ty = cJSON_GetStringValue(tyj);
        float factor = 1;
        if (!ty) {
            st = kvq_err(lg, KVQ_ERR_FORMAT, "config.json rope_scaling has no rope_type (or type) string");
            goto done;
        }
        if (!cfg_float(m, rs, "rope_scaling.", "factor", 1e-6, &factor, &st)) goto done;
        if (!strcmp(ty, "linear")) {
            h->rope_scaling = KVQ_ROPE_LINEAR;
            h->rope_freq_scale = 1.0f / factor;
        } else if (!strcmp(ty, "llama3")) {
            float lo = 1, hi = 4;
            int32_t orig = 8192;
            if (!cfg_float(m, rs, "rope_scaling.", "low_freq_factor", 1e-6, &lo, &st) ||
                !cfg_float(m, rs, "rope_scaling.", "high_freq_factor", 1e-6, &hi, &st) ||
                !cfg_int(m, rs, "original_max_position_embeddings", 1, 1 << 24, false, &orig, &st))
                goto done;
            if (!(hi > lo)) {
                st = kvq_err(lg, KVQ_ERR_FORMAT,
                             "config.json rope_scaling.high_freq_factor %g must exceed low_freq_factor %g", hi, lo);
                goto done;
            }
            /* Same divisors llama.cpp's converter writes to rope_freqs.weight. */
            int nf = h->n_rot / 2;
            h->rope_freq_factors = malloc((size_t)nf * sizeof(float));
            if (!h->rope_freq_factors) { st = KVQ_ERR_NOMEM; goto done; }
            for (int i = 0; i < nf; i++) {
                double freq = 1.0 / pow((double)h->rope_theta, 2.0 * i / h->n_rot);
                double wavelen = 2 * 3.14159265358979323846 / freq;
                double lo_wl = orig / lo, hi_wl = orig / hi, f;
                if (wavelen < hi_wl) f = 1;
                else if (wavelen > lo_wl) f = factor;
                else {
                    double smooth = (orig / wavelen - lo) / (hi - lo);
                    f = 1 / ((1 - smooth) / factor + smooth);
                }
                h->rope_freq_factors[i] = (float)f;
            }
            h->rope_scaling = KVQ_ROPE_LLAMA3;
        } else if (strcmp(ty, "default")) {
            st = kvq_err(lg, KVQ_ERR_UNSUPPORTED, "rope scaling '%.16s' is not supported (linear, llama3 are)", ty);
            goto done;
        }
    }
    if ((st = load_tokenizer_json(m, dir, cfg))) goto done;
    if ((st = load_chat_template(m, dir))) goto done;
    if (m->vocab_only) goto done;
    if ((st = kvq_model_validate(m))) goto done;

    m->shards = calloc(HF_MAX_SHARDS, sizeof *m->shards);
    w.sh = calloc(HF_MAX_SHARDS, sizeof *w.sh);
    if (!m->shards || !w.sh) { st = KVQ_ERR_NOMEM; goto done; }
    cJSON *index = read_json(m, dir, "model.safetensors.index.json", false, &st);
    if (st) goto done;
    if (index) {
        const cJSON *wm = cJSON_GetObjectItemCaseSensitive(index, "weight_map");
        for (const cJSON *e = wm ? wm->child : NULL; e && !st; e = e->next) {
            if (!cJSON_IsString(e)) { st = kvq_err(lg, KVQ_ERR_FORMAT, "weight_map entry malformed"); break; }
            bool seen = false;
            for (const cJSON *p = wm->child; p != e; p = p->next) seen |= !strcmp(p->valuestring, e->valuestring);
            if (!seen) st = open_shard(m, dir, e->valuestring, &w.sh[w.n++]);
        }
        cJSON_Delete(index);
    } else {
        st = open_shard(m, dir, "model.safetensors", &w.sh[w.n++]);
    }
    if (st) goto done;

    const int64_t E = h->n_embd, Q = (int64_t)h->n_head * h->head_dim, KV = (int64_t)h->n_head_kv * h->head_dim;
    bool tied = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(cfg, "tie_word_embeddings"));
    /* tied checkpoints may store either name of the shared matrix */
    if ((st = weight(m, &w, &m->tok_embd, "model.embed_tokens.weight", E, h->n_vocab, !tied)) ||
        (st = weight(m, &w, &m->out_norm, "model.norm.weight", E, 1, true)) ||
        (st = weight(m, &w, &m->output, "lm_head.weight", E, h->n_vocab, !tied)))
        goto done;
    if (!m->output.data) m->output = m->tok_embd;
    if (!m->tok_embd.data) m->tok_embd = m->output;
    if (!m->tok_embd.data) {
        st = kvq_err(lg, KVQ_ERR_FORMAT, "neither model.embed_tokens.weight nor lm_head.weight is present");
        goto done;
    }
    m->layers = calloc((size_t)h->n_layer, sizeof *m->layers);
    if (!m->layers) { st = KVQ_ERR_NOMEM; goto done; }
    for (int l = 0; l < h->n_layer && !st; l++) {
        kvq_layer_weights *L = &m->layers[l];
        char n[12][96];
        const char *suf[12] = {"input_layernorm.weight", "self_attn.q_proj.weight", "self_attn.k_proj.weight",
                               "self_attn.v_proj.weight", "self_attn.o_proj.weight", "self_attn.q_proj.bias",
                               "self_attn.k_proj.bias", "self_attn.v_proj.bias", "post_attention_layernorm.weight",
                               "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight"};
        for (int k = 0; k < 12; k++) snprintf(n[k], sizeof n[k], "model.layers.%d.%s", l, suf[k]);
        if ((st = weight(m, &w, &L->attn_norm, n[0], E, 1, true)) || (st = weight(m, &w, &L->wq, n[1], E, Q, true)) ||
            (st = weight(m, &w, &L->wk, n[2], E, KV, true)) || (st = weight(m, &w, &L->wv, n[3], E, KV, true)) ||
            (st = weight(m, &w, &L->wo, n[4], Q, E, true)) || (st = weight(m, &w, &L->bq, n[5], Q, 1, false)) ||
            (st = weight(m, &w, &L->bk, n[6], KV, 1, false)) || (st = weight(m, &w, &L->bv, n[7], KV, 1, false)) ||
            (st = weight(m, &w, &L->ffn_norm, n[8], E, 1, true)) ||
            (st = weight(m, &w, &L->w_gate, n[9], E, h->n_ff, true)) ||
            (st = weight(m, &w, &L->w_up, n[10], E, h->n_ff, true)) ||
            (st = weight(m, &w, &L->w_down, n[11], h->n_ff, E, true)))
            break;
    }
done:
    for (int i = 0; i < w.n; i++) kvq_safetensors_free(&w.sh[i]);
    free(w.sh);
    cJSON_Delete(cfg);
    return st;
}
