/*
 * enospc.c: an LD_PRELOAD shim that makes one directory run out of space, with no privilege.
 *
 * Why: a size-limited tmpfs needs root or CAP_SYS_ADMIN, so the disk-full fault test could not run in
 * an unprivileged CI container. This shim gives every process it is preloaded into a byte budget for
 * writes to files under one directory; once the budget is spent, writes there fail with ENOSPC, the
 * same errno a full disk gives. Everything else passes straight through to libc (dlsym(RTLD_NEXT)).
 *
 * Environment (read once, when the library loads):
 *   GENBATCH_ENOSPC_DIR    writes to files whose /proc/self/fd/N target lies under this directory count
 *   GENBATCH_ENOSPC_BYTES  the budget in bytes, cumulative over all such writes of this process
 *   GENBATCH_ENOSPC_LOG    each injected failure appends one line, "ENOSPC <path>\n" (one O_APPEND
 *                          write, so concurrent processes do not tear lines); keep it outside the dir
 *   GENBATCH_FAULTS_INJECT "0" turns the shim into a pure pass-through (tests/injection.py's switch)
 *
 * Intercepted: write, pwrite(64), writev, pwritev(64)(2), sendfile(64), copy_file_range,
 * fallocate(64), posix_fallocate(64). A write that straddles the budget is written up to the budget
 * (a short write, as a filling disk gives); the next one fails. A vectored write that does not fit
 * fails whole. The log is written with raw syscalls so the shim never intercepts itself.
 * Not intercepted: stores through mmap'ed memory, calls made inside libc itself (stdio's fwrite),
 * and metadata (mkdir, link, rename), which a real full disk can also refuse.
 *
 * Build: cc -shared -fPIC -O2 -o libenospc.so enospc.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#ifndef FALLOC_FL_PUNCH_HOLE
#define FALLOC_FL_PUNCH_HOLE 0x02
#endif

static char limit_dir[PATH_MAX];
static size_t limit_dir_len;
static char log_path[PATH_MAX];
static long long remaining;  /* bytes left in the budget; guarded by lock */
static int active;           /* 0: pass everything through */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_pwrite64)(int, const void *, size_t, off64_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static ssize_t (*real_pwritev)(int, const struct iovec *, int, off_t);
static ssize_t (*real_pwritev64)(int, const struct iovec *, int, off64_t);
static ssize_t (*real_pwritev2)(int, const struct iovec *, int, off_t, int);
static ssize_t (*real_pwritev64v2)(int, const struct iovec *, int, off64_t, int);
static ssize_t (*real_sendfile)(int, int, off_t *, size_t);
static ssize_t (*real_sendfile64)(int, int, off64_t *, size_t);
static ssize_t (*real_copy_file_range)(int, off64_t *, int, off64_t *, size_t, unsigned int);
static int (*real_fallocate)(int, int, off_t, off_t);
static int (*real_fallocate64)(int, int, off64_t, off64_t);
static int (*real_posix_fallocate)(int, off_t, off_t);
static int (*real_posix_fallocate64)(int, off64_t, off64_t);

static int injection_switched_off(void) {
    const char *v = getenv("GENBATCH_FAULTS_INJECT");
    if (v == NULL) return 0;
    while (*v == ' ' || *v == '\t' || *v == '\n') v++;
    size_t n = strlen(v);
    while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t' || v[n - 1] == '\n')) n--;
    return n == 1 && v[0] == '0';
}

__attribute__((constructor)) static void enospc_init(void) {
    real_write = dlsym(RTLD_NEXT, "write");
    real_pwrite = dlsym(RTLD_NEXT, "pwrite");
    real_pwrite64 = dlsym(RTLD_NEXT, "pwrite64");
    real_writev = dlsym(RTLD_NEXT, "writev");
    real_pwritev = dlsym(RTLD_NEXT, "pwritev");
    real_pwritev64 = dlsym(RTLD_NEXT, "pwritev64");
    real_pwritev2 = dlsym(RTLD_NEXT, "pwritev2");
    real_pwritev64v2 = dlsym(RTLD_NEXT, "pwritev64v2");
    real_sendfile = dlsym(RTLD_NEXT, "sendfile");
    real_sendfile64 = dlsym(RTLD_NEXT, "sendfile64");
    real_copy_file_range = dlsym(RTLD_NEXT, "copy_file_range");
    real_fallocate = dlsym(RTLD_NEXT, "fallocate");
    real_fallocate64 = dlsym(RTLD_NEXT, "fallocate64");
    real_posix_fallocate = dlsym(RTLD_NEXT, "posix_fallocate");
    real_posix_fallocate64 = dlsym(RTLD_NEXT, "posix_fallocate64");

    const char *dir = getenv("GENBATCH_ENOSPC_DIR");
    const char *bytes = getenv("GENBATCH_ENOSPC_BYTES");
    const char *log = getenv("GENBATCH_ENOSPC_LOG");
    if (dir == NULL || bytes == NULL || injection_switched_off()) return;
    /* /proc/self/fd shows resolved paths, so compare against the resolved directory. */
    if (realpath(dir, limit_dir) == NULL) snprintf(limit_dir, sizeof limit_dir, "%s", dir);  /* not made yet */
    limit_dir_len = strlen(limit_dir);
    while (limit_dir_len > 1 && limit_dir[limit_dir_len - 1] == '/') limit_dir[--limit_dir_len] = '\0';
    remaining = strtoll(bytes, NULL, 10);
    if (log != NULL) snprintf(log_path, sizeof log_path, "%s", log);
    active = 1;
}

/* The fd's path when it lies under the limited directory (written into buf), else NULL. */
static const char *limited_path(int fd, char *buf, size_t size) {
    char link[64];
    if (!active) return NULL;
    int saved = errno;
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, buf, size - 1);
    errno = saved;
    if (n <= 0) return NULL;
    buf[n] = '\0';
    if ((size_t)n < limit_dir_len || strncmp(buf, limit_dir, limit_dir_len) != 0) return NULL;
    if (buf[limit_dir_len] != '/' && buf[limit_dir_len] != '\0' && limit_dir_len != 1) return NULL;
    return buf;
}

static void log_failure(const char *path) {
    char line[PATH_MAX + 16];
    if (log_path[0] == '\0') return;
    int n = snprintf(line, sizeof line, "ENOSPC %s\n", path);
    if (n <= 0) return;
    if ((size_t)n >= sizeof line) n = (int)sizeof line - 1;
    int saved = errno;
    long fd = syscall(SYS_openat, AT_FDCWD, log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0) {
        syscall(SYS_write, (int)fd, line, (size_t)n);
        syscall(SYS_close, (int)fd);
    }
    errno = saved;
}

/* Take up to `want` bytes from the budget; all-or-nothing when `whole`. 0 means out of space. */
static size_t reserve(size_t want, int whole) {
    size_t got;
    pthread_mutex_lock(&lock);
    if (remaining <= 0 || (whole && (long long)want > remaining)) {
        got = 0;
    } else {
        got = (long long)want > remaining ? (size_t)remaining : want;
        remaining -= (long long)got;
    }
    pthread_mutex_unlock(&lock);
    return got;
}

/* Give back what a call reserved but did not write (a short or failed real call). */
static void refund(size_t reserved, ssize_t written) {
    size_t used = written > 0 ? (size_t)written : 0;
    if (used >= reserved) return;
    pthread_mutex_lock(&lock);
    remaining += (long long)(reserved - used);
    pthread_mutex_unlock(&lock);
}

static ssize_t no_space_errno(void) {
    errno = ENOSPC;
    return -1;
}

static ssize_t no_space(const char *path) {
    log_failure(path);
    return no_space_errno();
}

static size_t iov_total(const struct iovec *iov, int cnt) {
    size_t total = 0;
    for (int i = 0; i < cnt; i++) total += iov[i].iov_len;
    return total;
}

/* One pattern for every byte-count call: reserve, call the real function with what fits, refund. */
#define BUDGETED(fd, count, whole, call_with_n)                      \
    do {                                                             \
        char path_[PATH_MAX];                                        \
        size_t want_ = (count);                                      \
        if (want_ == 0 || limited_path((fd), path_, sizeof path_) == NULL) { \
            size_t n = want_;                                        \
            return call_with_n;                                      \
        }                                                            \
        size_t n = reserve(want_, (whole));                          \
        if (n == 0) return no_space(path_);                          \
        ssize_t r_ = call_with_n;                                    \
        int saved_ = errno;                                          \
        refund(n, r_);                                               \
        errno = saved_;                                              \
        return r_;                                                   \
    } while (0)

ssize_t write(int fd, const void *buf, size_t count) {
    BUDGETED(fd, count, 0, real_write(fd, buf, n));
}

ssize_t pwrite(int fd, const void *buf, size_t count, off_t offset) {
    BUDGETED(fd, count, 0, real_pwrite(fd, buf, n, offset));
}

ssize_t pwrite64(int fd, const void *buf, size_t count, off64_t offset) {
    BUDGETED(fd, count, 0, real_pwrite64(fd, buf, n, offset));
}

ssize_t writev(int fd, const struct iovec *iov, int cnt) {
    BUDGETED(fd, iov_total(iov, cnt), 1, ((void)n, real_writev(fd, iov, cnt)));
}

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t offset) {
    BUDGETED(fd, iov_total(iov, cnt), 1, ((void)n, real_pwritev(fd, iov, cnt, offset)));
}

ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off64_t offset) {
    BUDGETED(fd, iov_total(iov, cnt), 1, ((void)n, real_pwritev64(fd, iov, cnt, offset)));
}

ssize_t pwritev2(int fd, const struct iovec *iov, int cnt, off_t offset, int flags) {
    BUDGETED(fd, iov_total(iov, cnt), 1, ((void)n, real_pwritev2(fd, iov, cnt, offset, flags)));
}

ssize_t pwritev64v2(int fd, const struct iovec *iov, int cnt, off64_t offset, int flags) {
    BUDGETED(fd, iov_total(iov, cnt), 1, ((void)n, real_pwritev64v2(fd, iov, cnt, offset, flags)));
}

ssize_t sendfile(int out_fd, int in_fd, off_t *offset, size_t count) {
    BUDGETED(out_fd, count, 0, real_sendfile(out_fd, in_fd, offset, n));
}

ssize_t sendfile64(int out_fd, int in_fd, off64_t *offset, size_t count) {
    BUDGETED(out_fd, count, 0, real_sendfile64(out_fd, in_fd, offset, n));
}

ssize_t copy_file_range(int fd_in, off64_t *off_in, int fd_out, off64_t *off_out, size_t len, unsigned int flags) {
    BUDGETED(fd_out, len, 0, real_copy_file_range(fd_in, off_in, fd_out, off_out, n, flags));
}

/* fallocate/posix_fallocate reserve space without writing it: the budget is spent whole, or they fail.
 * Returns 1 when out of space (logged); else 0, with *taken the bytes reserved (0 when not limited). */
static int take_for_alloc(int fd, off64_t len, size_t *taken) {
    char path[PATH_MAX];
    *taken = 0;
    if (len <= 0 || limited_path(fd, path, sizeof path) == NULL) return 0;
    *taken = reserve((size_t)len, 1);
    if (*taken > 0) return 0;
    log_failure(path);
    return 1;
}

static int alloc_done(size_t taken, int ok, int result) {
    int saved = errno;
    if (taken > 0) refund(taken, ok ? (ssize_t)taken : -1);
    errno = saved;
    return result;
}

int fallocate(int fd, int mode, off_t offset, off_t len) {
    size_t taken = 0;
    if (!(mode & FALLOC_FL_PUNCH_HOLE) && take_for_alloc(fd, len, &taken)) return (int)no_space_errno();
    int r = real_fallocate(fd, mode, offset, len);
    return alloc_done(taken, r == 0, r);
}

int fallocate64(int fd, int mode, off64_t offset, off64_t len) {
    size_t taken = 0;
    if (!(mode & FALLOC_FL_PUNCH_HOLE) && take_for_alloc(fd, len, &taken)) return (int)no_space_errno();
    int r = real_fallocate64(fd, mode, offset, len);
    return alloc_done(taken, r == 0, r);
}

/* posix_fallocate returns the error number instead of setting errno. */
int posix_fallocate(int fd, off_t offset, off_t len) {
    size_t taken = 0;
    if (take_for_alloc(fd, len, &taken)) return ENOSPC;
    int r = real_posix_fallocate(fd, offset, len);
    return alloc_done(taken, r == 0, r);
}

int posix_fallocate64(int fd, off64_t offset, off64_t len) {
    size_t taken = 0;
    if (take_for_alloc(fd, len, &taken)) return ENOSPC;
    int r = real_posix_fallocate64(fd, offset, len);
    return alloc_done(taken, r == 0, r);
}
