/* Streaming read bandwidth of this machine, measured the way decode reads:
 * every thread sums its share of a buffer once. */
#include <immintrin.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "cli.h"

__attribute__((target("avx2"))) static uint64_t sum_avx2(const uint8_t *p, size_t n) {
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t i = 0; i + 128 <= n; i += 128) {
        a0 = _mm256_xor_si256(a0, _mm256_load_si256((const __m256i *)(p + i)));
        a1 = _mm256_xor_si256(a1, _mm256_load_si256((const __m256i *)(p + i + 32)));
        a2 = _mm256_xor_si256(a2, _mm256_load_si256((const __m256i *)(p + i + 64)));
        a3 = _mm256_xor_si256(a3, _mm256_load_si256((const __m256i *)(p + i + 96)));
    }
    a0 = _mm256_xor_si256(_mm256_xor_si256(a0, a1), _mm256_xor_si256(a2, a3));
    uint64_t r[4];
    _mm256_storeu_si256((__m256i *)r, a0);
    return r[0] ^ r[1] ^ r[2] ^ r[3];
}

static uint64_t sum_scalar(const uint8_t *p, size_t n) {
    uint64_t a = 0, b = 0;
    for (size_t i = 0; i + 16 <= n; i += 16) {
        uint64_t x, y;
        memcpy(&x, p + i, 8);
        memcpy(&y, p + i + 8, 8);
        a ^= x;
        b ^= y;
    }
    return a ^ b;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Median GB/s of reading buf (bytes) with `threads` threads, `inner` times per rep. */
static double time_reads(const uint8_t *buf, size_t bytes, int threads, int reps, int inner) {
    int avx2 = __builtin_cpu_supports("avx2");
    double *gbs = malloc((size_t)reps * sizeof *gbs);
    if (!gbs) return 0;
    volatile uint64_t sink = 0;
    for (int r = 0; r < reps; r++) {
        double t0 = cli_now();
        uint64_t acc = 0;
        for (int it = 0; it < inner; it++) {
#pragma omp parallel num_threads(threads) reduction(^ : acc)
            {
                int t = omp_get_thread_num(), n = omp_get_num_threads();
                size_t per = bytes / (size_t)n / 128 * 128, off = per * (size_t)t;
                acc ^= avx2 ? sum_avx2(buf + off, per) : sum_scalar(buf + off, per);
            }
        }
        gbs[r] = (double)bytes * inner / (cli_now() - t0) / 1e9;
        sink ^= acc;
    }
    qsort(gbs, (size_t)reps, sizeof *gbs, cmp_d);
    double med = gbs[reps / 2];
    free(gbs);
    (void)sink;
    return med;
}

double cli_read_bandwidth(size_t bytes, int threads, int reps) {
    uint8_t *buf = aligned_alloc(64, bytes);
    if (!buf) return 0;
    memset(buf, 1, bytes);
    /* small buffers are read several times per rep so timing is not dominated by overhead */
    int inner = bytes >= (256u << 20) ? 1 : (int)((256u << 20) / bytes);
    double med = time_reads(buf, bytes, threads, reps, inner);
    free(buf);
    return med;
}

struct cli_file_bw {
    void *p;
    size_t bytes;
};

cli_file_bw *cli_file_bw_open(const char *path, size_t min_bytes) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return NULL;
    struct stat st;
    cli_file_bw *f = NULL;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (size_t)st.st_size >= min_bytes && st.st_size > 0) {
        void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
        if (p != MAP_FAILED && (f = malloc(sizeof *f))) {
            f->p = p;
            f->bytes = (size_t)st.st_size;
            time_reads(p, f->bytes, 1, 1, 1); /* pages in what decode has not touched yet */
        } else if (p != MAP_FAILED) {
            munmap(p, (size_t)st.st_size);
        }
    }
    close(fd);
    return f;
}

double cli_file_bw_read(cli_file_bw *f, int threads, int reps) { return f ? time_reads(f->p, f->bytes, threads, reps, 1) : 0; }

void cli_file_bw_close(cli_file_bw *f) {
    if (!f) return;
    munmap(f->p, f->bytes);
    free(f);
}
