/* Shared helpers for the peer benchmark programs. */
#ifndef PERF_COMMON_H
#define PERF_COMMON_H

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static inline uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* user+sys CPU time of this process (and reaped children if who==RUSAGE_CHILDREN) */
static inline double cpu_ms(int who) {
    struct rusage ru;
    getrusage(who, &ru);
    return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 +
           (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
}

#define DIE(...)                                                   \
    do {                                                           \
        fprintf(stderr, "fatal %s:%d: ", __FILE__, __LINE__);      \
        fprintf(stderr, __VA_ARGS__);                              \
        fprintf(stderr, " (errno=%d %s)\n", errno, strerror(errno)); \
        exit(2);                                                   \
    } while (0)

/* One result line, parsed by driver.py:  METRIC <name> <value> <unit> */
static inline void metric(const char *name, double value, const char *unit) {
    printf("METRIC %s %.6g %s\n", name, value, unit);
    fflush(stdout);
}

/* Parse sizes like 4096, 64k, 1m, 2g (binary multiples). */
static inline uint64_t parse_size(const char *s) {
    char *end;
    double v = strtod(s, &end);
    switch (*end) {
    case 'k': case 'K': v *= 1024; break;
    case 'm': case 'M': v *= 1024 * 1024; break;
    case 'g': case 'G': v *= 1024.0 * 1024 * 1024; break;
    default: break;
    }
    return (uint64_t)v;
}

static inline void set_pipe_size(int fd, uint64_t sz) {
    if (sz == 0) return;
    if (fcntl(fd, F_SETPIPE_SZ, (int)sz) < 0) DIE("F_SETPIPE_SZ %llu", (unsigned long long)sz);
}

static inline void set_nonblock(int fd, int on) {
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0) DIE("F_GETFL");
    fl = on ? (fl | O_NONBLOCK) : (fl & ~O_NONBLOCK);
    if (fcntl(fd, F_SETFL, fl) < 0) DIE("F_SETFL");
}

/* Write exactly n bytes to a blocking fd. */
static inline void write_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            DIE("write");
        }
        p += w;
        n -= (size_t)w;
    }
}

#endif
