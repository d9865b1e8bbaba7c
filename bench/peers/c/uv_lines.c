/*
 * uv_lines LINES LINE_BYTES HIGH LOW
 * libuv peer for small writes: uv_spawn() `cat` (stdout to /dev/null) with its stdin on a
 * pipe, then LINES writes of LINE_BYTES each, one uv_write() and one malloc'd uv_write_t
 * per line (libuv does not copy: every request points at the same static line). The
 * producer writes until the write queue holds HIGH bytes and writes more from a write
 * callback once it is at or below LOW, as evloop's write_bench does.
 * Reports lines per second.
 */
#include "common.h"
#include <uv.h>

static uv_pipe_t in_h;
static uv_process_t proc;
static uint64_t lines, sent, done;
static size_t high, low;
static char *line;
static size_t line_bytes;

static void fill(void);

static void write_cb(uv_write_t *r, int st) {
    free(r);
    if (st) { fprintf(stderr, "write_cb %s\n", uv_strerror(st)); exit(2); }
    done++;
    if (done == lines) uv_close((uv_handle_t *)&in_h, NULL); /* cat sees EOF and exits */
    else if (uv_stream_get_write_queue_size((uv_stream_t *)&in_h) <= low) fill();
}

static void fill(void) {
    while (sent < lines && uv_stream_get_write_queue_size((uv_stream_t *)&in_h) < high) {
        uv_write_t *r = malloc(sizeof *r);
        if (!r) DIE("malloc");
        uv_buf_t b = uv_buf_init(line, (unsigned)line_bytes);
        int rc = uv_write(r, (uv_stream_t *)&in_h, &b, 1, write_cb);
        if (rc) { fprintf(stderr, "uv_write %s\n", uv_strerror(rc)); exit(2); }
        sent++;
    }
}

static void exit_cb(uv_process_t *p, int64_t st, int sig) {
    if (st || sig) { fprintf(stderr, "cat: status %lld signal %d\n", (long long)st, sig); exit(2); }
    uv_close((uv_handle_t *)p, NULL);
}

int main(int argc, char **argv) {
    if (argc < 5) { fprintf(stderr, "usage: uv_lines LINES LINE_BYTES HIGH LOW\n"); return 2; }
    lines = strtoull(argv[1], NULL, 10);
    line_bytes = strtoull(argv[2], NULL, 10);
    if (line_bytes == 0) line_bytes = 1;
    high = strtoull(argv[3], NULL, 10);
    low = strtoull(argv[4], NULL, 10);
    line = malloc(line_bytes);
    memset(line, 'x', line_bytes);
    line[line_bytes - 1] = '\n';
    uv_loop_t *loop = uv_default_loop();
    uv_pipe_init(loop, &in_h, 0);
    char *args[] = {"cat", NULL};
    uv_stdio_container_t stdio[3];
    stdio[0].flags = UV_CREATE_PIPE | UV_READABLE_PIPE;
    stdio[0].data.stream = (uv_stream_t *)&in_h;
    stdio[1].flags = UV_IGNORE;
    stdio[2].flags = UV_INHERIT_FD; stdio[2].data.fd = 2;
    uv_process_options_t opt = {0};
    opt.file = "cat";
    opt.args = args;
    opt.exit_cb = exit_cb;
    opt.stdio = stdio;
    opt.stdio_count = 3;
    int rc = uv_spawn(loop, &proc, &opt);
    if (rc) { fprintf(stderr, "uv_spawn: %s\n", uv_strerror(rc)); return 2; }
    uint64_t t0 = now_ns();
    fill();
    uv_run(loop, UV_RUN_DEFAULT);
    double secs = (now_ns() - t0) / 1e9;
    if (done != lines) { fprintf(stderr, "only %llu of %llu lines\n", (unsigned long long)done, (unsigned long long)lines); return 2; }
    metric("lines_per_sec", lines / secs, "lines/s");
    return 0;
}
