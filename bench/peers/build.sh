#!/usr/bin/env bash
# Builds the peer benchmark programs into bench/peers/build, where bench/compare.py finds
# them: the raw-syscall limits and libuv in C, and tokio, mio and std in one Rust binary.
# Needs gcc, libuv's headers (Debian: apt-get install -y libuv1-dev) and cargo.
set -euo pipefail
cd "$(dirname "$0")"
if ! printf '#include <uv.h>\n' | gcc -x c -E - >/dev/null 2>&1; then
    echo "build.sh: libuv's headers are missing (Debian: apt-get install -y libuv1-dev)" >&2
    exit 1
fi
mkdir -p build
CFLAGS="-O2 -g -Wall -Wextra"
for p in pipe_bench writer_child echo_child pingpong_raw loop_raw spawn_raw; do
    gcc $CFLAGS -o "build/$p" "c/$p.c" -lpthread
done
for p in uv_pump uv_spawn uv_loop uv_timers uv_pingpong uv_lines; do
    gcc $CFLAGS -o "build/$p" "c/$p.c" -luv
done
(cd rust && cargo build --release --quiet)
cp rust/target/release/perf-peers build/
echo "built the peers in $(pwd)/build"
