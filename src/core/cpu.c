#include "cpu.h"

#include <cblas.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "kvq.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

/* CPUID leaf 1 / leaf 7 bits, plus XGETBV to check the OS saves the wide registers. */
static bool x86_has(int isa) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return false;
    bool fma = c & (1u << 12), osxsave = c & (1u << 27), avx = c & (1u << 28), f16c = c & (1u << 29);
    if (!osxsave || !avx) return false;
    unsigned xlo, xhi;
    __asm__ volatile("xgetbv" : "=a"(xlo), "=d"(xhi) : "c"(0));
    if ((xlo & 6) != 6) return false; /* XMM and YMM state */
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    bool avx2 = b & (1u << 5);
    if (isa == KVQ_ISA_AVX2) return avx2 && fma && f16c;
    bool zmm = (xlo & 0xe6) == 0xe6; /* opmask and ZMM state */
    bool f = b & (1u << 16), dq = b & (1u << 17), bw = b & (1u << 30), vl = b & (1u << 31), vnni = c & (1u << 11);
    return avx2 && fma && f16c && zmm && f && dq && bw && vl && vnni;
}

static bool x86_vbmi(void) {
    unsigned a, b, c, d;
    return x86_has(KVQ_ISA_AVX512) && __get_cpuid_count(7, 0, &a, &b, &c, &d) && (c & (1u << 1));
}
#endif

bool kvq_isa_supported(int isa) {
    if (isa == KVQ_ISA_SCALAR) return true;
#if defined(__x86_64__) || defined(__i386__)
    if (isa == KVQ_ISA_AVX2 || isa == KVQ_ISA_AVX512) return x86_has(isa);
#endif
    return false;
}

const char *kvq_isa_str(int isa) {
    switch (isa) {
    case KVQ_ISA_SCALAR: return "scalar";
    case KVQ_ISA_AVX2: return "avx2";
    case KVQ_ISA_AVX512: return "avx512";
    }
    return "?";
}

static pthread_once_t isa_once = PTHREAD_ONCE_INIT;
static int isa_chosen = KVQ_ISA_SCALAR;
static bool vbmi_usable = false;

static void choose_isa(void) {
    int best = KVQ_ISA_SCALAR;
    for (int i = KVQ_ISA_COUNT - 1; i > 0; i--)
        if (kvq_isa_supported(i)) { best = i; break; }
    const char *env = getenv("KVQ_ISA");
    if (env && *env) {
        for (int i = 0; i < KVQ_ISA_COUNT; i++)
            if (strcmp(env, kvq_isa_str(i)) == 0 && kvq_isa_supported(i)) { best = i; break; }
    }
    isa_chosen = best;
#if defined(__x86_64__) || defined(__i386__)
    vbmi_usable = best == KVQ_ISA_AVX512 && x86_vbmi();
#endif
}

bool kvq_cpu_vbmi(void) {
#if defined(__x86_64__) || defined(__i386__)
    return x86_vbmi();
#else
    return false;
#endif
}

bool kvq_isa_vbmi(void) {
    pthread_once(&isa_once, choose_isa);
    return vbmi_usable;
}

int kvq_isa_active(void) {
    pthread_once(&isa_once, choose_isa);
    return isa_chosen;
}

const char *kvq_isa_name(void) { return kvq_isa_str(kvq_isa_active()); }

int kvq_others_running(int own) {
    FILE *f = fopen("/proc/loadavg", "r");
    if (!f) return -1;
    double a, b, c;
    int running = -1, total;
    const int got = fscanf(f, "%lf %lf %lf %d/%d", &a, &b, &c, &running, &total);
    fclose(f);
    if (got != 5 || running < 0) return -1;
    return running - own > 0 ? running - own : 0;
}

int kvq_n_cores(void) {
    /* a user's OMP_NUM_THREADS is the default count, as for any OpenMP program */
    const char *e = getenv("OMP_NUM_THREADS");
    if (e && *e) {
        char *end;
        const long v = strtol(e, &end, 10);
        if ((*end == 0 || *end == ',') && v > 0 && v <= 1024) return (int)v;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

static pthread_once_t blas_once = PTHREAD_ONCE_INIT;
static void blas_one_thread(void) { openblas_set_num_threads(1); }
void kvq_blas_serial(void) { pthread_once(&blas_once, blas_one_thread); }
