#include "mapfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer
 * before the S_ISREG check could refuse it. */
static int open_regular(const char *path, struct stat *st, const kvq_logger *lg, kvq_status *status) {
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        *status = kvq_err(lg, KVQ_ERR_IO, "cannot open '%s': %s", path, strerror(errno));
        return -1;
    }
    if (fstat(fd, st) != 0 || !S_ISREG(st->st_mode)) {
        close(fd);
        *status = kvq_err(lg, KVQ_ERR_IO, "'%s' is not a regular file (a %s)", path,
                          S_ISDIR(st->st_mode) ? "directory" : S_ISFIFO(st->st_mode) ? "FIFO"
                          : S_ISCHR(st->st_mode) ? "character device" : S_ISSOCK(st->st_mode) ? "socket" : "special file");
        return -1;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0) fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    *status = KVQ_OK;
    return fd;
}

FILE *kvq_fopen_read(const char *path, const kvq_logger *lg, kvq_status *status) {
    struct stat st;
    kvq_status s;
    int fd = open_regular(path, &st, lg, &s);
    if (status) *status = s;
    if (fd < 0) return NULL;
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        close(fd);
        s = kvq_err(lg, KVQ_ERR_IO, "cannot open '%s': %s", path, strerror(errno));
        if (status) *status = s;
    }
    return f;
}

kvq_status kvq_mapfile_open(const char *path, kvq_mapfile *m, const kvq_logger *lg) {
    m->data = NULL;
    m->size = 0;
    struct stat st;
    kvq_status status;
    int fd = open_regular(path, &st, lg, &status);
    if (fd < 0) return status;
    if (st.st_size == 0) {
        close(fd);
        return kvq_err(lg, KVQ_ERR_FORMAT, "'%s' is empty", path);
    }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED) return kvq_err(lg, KVQ_ERR_IO, "cannot map '%s': %s", path, strerror(errno));
    m->data = p;
    m->size = (size_t)st.st_size;
    return KVQ_OK;
}

void kvq_mapfile_close(kvq_mapfile *m) {
    if (m->data) munmap((void *)m->data, m->size);
    m->data = NULL;
    m->size = 0;
}

kvq_status kvq_read_file(const char *path, size_t max_size, char **out, size_t *len, const kvq_logger *lg) {
    *out = NULL;
    kvq_status status;
    FILE *f = kvq_fopen_read(path, lg, &status);
    if (!f) return status;
    if (fseek(f, 0, SEEK_END) != 0) { fclose(f); return kvq_err(lg, KVQ_ERR_IO, "cannot seek '%s'", path); }
    long sz = ftell(f);
    if (sz < 0 || (size_t)sz > max_size) {
        fclose(f);
        return kvq_err(lg, KVQ_ERR_FORMAT, "'%s' is larger than the %zu bytes allowed", path, max_size);
    }
    rewind(f);
    char *buf = malloc((size_t)sz + 1);
    if (!buf) { fclose(f); return kvq_err(lg, KVQ_ERR_NOMEM, "no memory for '%s'", path); }
    size_t got = fread(buf, 1, (size_t)sz, f);
    fclose(f);
    if (got != (size_t)sz) { free(buf); return kvq_err(lg, KVQ_ERR_IO, "short read on '%s'", path); }
    buf[sz] = 0;
    *out = buf;
    if (len) *len = (size_t)sz;
    return KVQ_OK;
}
