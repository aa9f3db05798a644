/* Instruction-set selection: detected once from CPUID, overridable with the
 * KVQ_ISA environment variable so tests can cover every path. The choice is
 * a process-wide constant after first use (pthread_once), not mutable state. */
#ifndef KVQ_CORE_CPU_H
#define KVQ_CORE_CPU_H
#include <stdbool.h>

enum { KVQ_ISA_SCALAR = 0, KVQ_ISA_AVX2 = 1, KVQ_ISA_AVX512 = 2, KVQ_ISA_COUNT = 3 };

int         kvq_isa_active(void);
bool        kvq_isa_supported(int isa);
const char *kvq_isa_str(int isa);
int         kvq_n_cores(void);
/* Runnable threads on the machine beyond own of ours (Linux /proc/loadavg;
 * -1 when unknown). A hint only: it is read at one instant. */
int         kvq_others_running(int own);
/* The least work (multiply-adds) a parallel region must hold to be forked:
 * below it one thread is faster on a quiet machine, and on a busy one a
 * join can wait a whole time slice for a thread that another process
 * displaced (issue 16's collapse: stories260K decode fell from ~7000 to
 * 190 tok/s with two busy processes on two cores). */
#ifndef KVQ_FORK_MIN_WORK
#define KVQ_FORK_MIN_WORK (1 << 19)
#endif
/* OpenBLAS to one thread (once per process): kvq threads around its BLAS
 * calls itself, and OpenBLAS's own threads would compete with OpenMP's for
 * the same cores (a 32K-token AQUA conversion spent half its time spinning).
 * Code that wants BLAS's threads (the weight quantizer's factorizations)
 * raises the count for the call and sets it back to 1. */
void        kvq_blas_serial(void);
/* AVX-512 VBMI (byte permutes) on top of the active AVX-512 path; false when
 * a narrower ISA is active or forced. */
bool        kvq_isa_vbmi(void);
/* Whether the CPU has AVX-512 VBMI, whatever path is active. */
bool        kvq_cpu_vbmi(void);

/* The kernel table of an ISA: tables[isa], or the nearest narrower ISA's
 * when that path has none of its own. The one place the ISA ladder is
 * written; every kernel family (types, attention, KIVI) goes through it. */
static inline const void *kvq_isa_pick(int isa, const void *const tables[KVQ_ISA_COUNT]) {
    if (isa < 0 || isa >= KVQ_ISA_COUNT) isa = 0;
    for (int i = isa; i > 0; i--)
        if (tables[i]) return tables[i];
    return tables[0];
}

#endif
