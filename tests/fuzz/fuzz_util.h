/* Fuzz helpers: expose an input as a file path (the loaders map files). */
#ifndef KVQ_FUZZ_UTIL_H
#define KVQ_FUZZ_UTIL_H
#include <stdio.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

/* Writes data to an anonymous memory file; returns its fd (path via
 * /proc/self/fd/N) or -1. */
static inline int fuzz_memfile(const uint8_t *data, size_t size, char *path, size_t cap) {
    int fd = memfd_create("kvq-fuzz", 0);
    if (fd < 0) return -1;
    if (size && write(fd, data, size) != (ssize_t)size) { close(fd); return -1; }
    snprintf(path, cap, "/proc/self/fd/%d", fd);
    return fd;
}
#endif
