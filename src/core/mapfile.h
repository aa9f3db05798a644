/* Read-only memory mapping of a whole file. */
#ifndef KVQ_CORE_MAPFILE_H
#define KVQ_CORE_MAPFILE_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "log.h"

typedef struct kvq_mapfile {
    const uint8_t *data;
    size_t size;
} kvq_mapfile;

kvq_status kvq_mapfile_open(const char *path, kvq_mapfile *m, const kvq_logger *lg);
void       kvq_mapfile_close(kvq_mapfile *m);
/* fopen(path, "rb") that refuses, with a logged reason, anything but a
 * regular file (a FIFO would block, a device never end). */
FILE      *kvq_fopen_read(const char *path, const kvq_logger *lg, kvq_status *status);
/* Reads a whole (small) file into a NUL-terminated heap buffer. */
kvq_status kvq_read_file(const char *path, size_t max_size, char **out, size_t *len, const kvq_logger *lg);

#endif
