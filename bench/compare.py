#!/usr/bin/env python3
"""Side-by-side benchmarks: evloop's example programs against the raw-syscall limit and peers.

Usage:
    cargo build --release --examples
    bench/peers/build.sh        # once: the peers (needs gcc and libuv's headers)
    bench/compare.py [--reps 5] [--only GROUP] [--callgrind]

The peer benchmark programs (sources in bench/peers: C programs for the raw limits and
libuv, loop_raw, pipe_bench, writer_child, echo_child, pingpong_raw, spawn_raw, uv_loop,
uv_timers, uv_pump, uv_pingpong, uv_spawn, uv_lines; and perf-peers, one Rust binary with the tokio,
mio and std programs) are taken from bench/peers/build once bench/peers/build.sh has run, or
from the directory PEERS names. Without them only evloop's own programs run.

Every round runs every benchmark once, so per-round ratios (numerator and denominator
measured seconds apart) cancel most of a noisy machine's drift. Within each placement of a
group the order is shuffled every round (seeded by the round number, so runs repeat): on
this kind of VM a benchmark's place in the sequence moves its unpinned result by a tenth
or more, and a fixed order would charge that to whoever always runs in the same place.
The tables give medians over rounds, [min-max], and the median of same-round ratios.

Placement: "cpu0" pins the whole process tree to CPU 0 (taskset -c 0), which measures CPU
cost without cross-CPU wakeups; "any" lets the scheduler place the processes.

--callgrind counts user-space instructions per unit of work with valgrind (noise-free):
each program runs at two sizes and the difference is divided by the difference in units.
VALGRIND names the valgrind to use (default: the one on PATH). valgrind 3.19 (Debian 12's)
does not know pidfd_open. evloop's default spawn path on Linux gets the child's pidfd from
clone itself, so it still reaps through the pidfd there; tokio, which calls pidfd_open,
falls back to SIGCHLD. The header says which valgrind ran.
"""
import argparse
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
EX = os.path.join(os.environ.get("CARGO_TARGET_DIR") or os.path.join(HERE, "..", "target"), "release", "examples")
BUILT_PEERS = os.path.join(HERE, "peers", "build")
PEERS = os.environ.get("PEERS") or (BUILT_PEERS if os.path.exists(os.path.join(BUILT_PEERS, "perf-peers")) else "")


def ex(name, *args):
    return [os.path.join(EX, name), *args]


def peer(name, *args):
    return [os.path.join(PEERS, name), *args]


def perf_peers(*args):
    return [os.path.join(PEERS, "perf-peers"), *args]


# (group, id, argv, placement, metric, needs_peers)
BENCH = []


def add(group, bid, argv, place, metric, needs_peers=False):
    # Ids are unique across groups: the group is part of them.
    BENCH.append(dict(group=group, id=f"{group}_{bid}", argv=argv, place=place, metric=metric, peers=needs_peers))


TOTAL = os.environ.get("BENCH_BYTES", "2g")
SECS = os.environ.get("BENCH_SECS", "0.5")
NTIMERS = os.environ.get("BENCH_TIMERS", "1000000")

# Loop overhead: one idle pipe registered, iterations per second.
add("loop", "raw_epoll_wait0", peer("loop_raw", SECS), "cpu0", "epoll_wait0_per_s", True)
add("loop", "evloop_nowait", ex("loop_bench", "--secs", SECS), "cpu0", "iters_per_s")
add("loop", "mio_poll0", perf_peers("mio_loop", SECS), "cpu0", "iters_per_s", True)
add("loop", "uv_idle_pipe", peer("uv_loop", "idle_pipe", SECS), "cpu0", "iters_per_s", True)

# A million timers.
add("timers", "evloop_timers", ex("timers_bench", "--count", NTIMERS), "cpu0", "cpu_ms")
add("timers", "uv_timers", peer("uv_timers", NTIMERS, "1000"), "cpu0", "cpu_ms", True)
add("timers", "tokio_timers", perf_peers("tokio_timers", NTIMERS, "1000"), "cpu0", "cpu_ms", True)

# Pipe throughput, 64 KiB reads (the same writer child for everyone when PEERS is set).
for place in ["cpu0", "any"]:
    wc = peer("writer_child")[0]
    writer = ["--child", wc] if PEERS else []
    add("pump", f"raw_proc_{place}", peer("pipe_bench", "proc", "64k", "64k", TOTAL, "0", "none"), place, "gbps", True)
    add("pump", f"evloop_{place}", ex("pump", "--bytes", TOTAL, *writer), place, "gbps")
    add("pump", f"evloop_select_{place}", ex("pump", "--bytes", TOTAL, "--force-select", *writer), place, "gbps")
    add("pump", f"uv_{place}", peer("uv_pump", TOTAL, "64k", "0", "64k", wc), place, "gbps", True)
    add("pump", f"tokio_{place}", perf_peers("tokio_pump", TOTAL, "64k", "0", "64k", wc), place, "gbps", True)
    add("pump", f"mio_{place}", perf_peers("mio_pump", TOTAL, "64k", "0", "64k", wc), place, "gbps", True)

# 1-byte ping-pong with an exec'd echo child (the same child for everyone when PEERS is set).
for place in ["cpu0", "any"]:
    echo = peer("echo_child")[0] if PEERS else "cat"
    add("pingpong", f"raw_epoll_{place}", peer("pingpong_raw", "epoll", SECS, echo), place, "rt_per_s", True)
    add("pingpong", f"evloop_{place}", ex("pingpong", "--secs", SECS, "--child", echo), place, "rt_per_sec")
    add("pingpong", f"evloop_try_{place}", ex("pingpong", "--secs", SECS, "--child", echo, "--try-write"), place, "rt_per_sec")
    add("pingpong", f"evloop_send_{place}", ex("pingpong", "--secs", SECS, "--child", echo, "--send"), place, "rt_per_sec")
    add("pingpong", f"evloop_select_{place}", ex("pingpong", "--secs", SECS, "--child", echo, "--force-select"), place, "rt_per_sec")
    add("pingpong", f"uv_write_{place}", peer("uv_pingpong", "write", SECS, echo), place, "rt_per_s", True)
    add("pingpong", f"uv_trywrite_{place}", peer("uv_pingpong", "trywrite", SECS, echo), place, "rt_per_s", True)
    add("pingpong", f"tokio_{place}", perf_peers("tokio_pingpong", SECS, echo), place, "rt_per_s", True)
    add("pingpong", f"mio_{place}", perf_peers("mio_pingpong", SECS, echo), place, "rt_per_s", True)

# Small writes: a million 32-byte lines to `cat`, each its own write with its own callback
# (evloop, libuv), or its own send (evloop_send: no callback; an empty write marks the
# low-water point), or its own write_all (tokio), or through a BufWriter (tokio_buf: no
# per-line completion, the batching a tokio user writes by hand).
NLINES = os.environ.get("BENCH_LINES", "1000000")
for place in ["cpu0", "any"]:
    add("lines", f"evloop_{place}", ex("write_bench", "--lines", NLINES, "--line-bytes", "32"), place, "lines_per_sec")
    add("lines", f"evloop_send_{place}", ex("write_bench", "--lines", NLINES, "--line-bytes", "32", "--send"), place, "lines_per_sec")
    add("lines", f"uv_{place}", peer("uv_lines", NLINES, "32", str(256 << 10), str(64 << 10)), place, "lines_per_sec", True)
    add("lines", f"tokio_{place}", perf_peers("tokio_lines", NLINES, "32"), place, "lines_per_sec", True)
    add("lines", f"tokio_buf_{place}", perf_peers("tokio_lines", NLINES, "32", "buf"), place, "lines_per_sec", True)

# Spawning /bin/true.
NSPAWN = os.environ.get("BENCH_SPAWNS", "2000")
add("spawn", "raw_pidfd_seq", peer("spawn_raw", "pidfd", NSPAWN, "1"), "any", "spawns_per_s", True)
add("spawn", "evloop_seq", ex("spawn_bench", "--count", NSPAWN, "--concurrency", "1"), "any", "per_sec")
add("spawn", "uv_seq", peer("uv_spawn", NSPAWN, "1"), "any", "spawns_per_s", True)
add("spawn", "raw_pidfd_c50", peer("spawn_raw", "pidfd", NSPAWN, "50"), "any", "spawns_per_s", True)
add("spawn", "evloop_c50", ex("spawn_bench", "--count", NSPAWN, "--concurrency", "50"), "any", "per_sec")
add("spawn", "uv_c50", peer("uv_spawn", NSPAWN, "50"), "any", "spawns_per_s", True)
add("spawn", "tokio_c50", perf_peers("tokio_spawn", NSPAWN, "50"), "any", "spawns_per_s", True)

RATIOS = [
    ("loop: evloop / raw epoll_wait(0)", "evloop_nowait", "raw_epoll_wait0"),
    ("loop: mio / raw", "mio_poll0", "raw_epoll_wait0"),
    ("loop: libuv / raw", "uv_idle_pipe", "raw_epoll_wait0"),
    ("timers: evloop CPU / libuv CPU", "evloop_timers", "uv_timers"),
    ("timers: tokio CPU / libuv CPU", "tokio_timers", "uv_timers"),
]
for place in ["cpu0", "any"]:
    RATIOS += [
        (f"pump {place}: evloop / raw", f"evloop_{place}", f"raw_proc_{place}"),
        (f"pump {place}: evloop via select helper / evloop", f"evloop_select_{place}", f"evloop_{place}"),
        (f"pump {place}: libuv / raw", f"uv_{place}", f"raw_proc_{place}"),
        (f"pump {place}: tokio / raw", f"tokio_{place}", f"raw_proc_{place}"),
        (f"pump {place}: mio / raw", f"mio_{place}", f"raw_proc_{place}"),
        (f"pingpong {place}: evloop / raw epoll", f"evloop_{place}", f"raw_epoll_{place}"),
        (f"pingpong {place}: evloop try_write / raw epoll", f"evloop_try_{place}", f"raw_epoll_{place}"),
        (f"pingpong {place}: evloop send / raw epoll", f"evloop_send_{place}", f"raw_epoll_{place}"),
        (f"pingpong {place}: evloop via select helper / evloop", f"evloop_select_{place}", f"evloop_{place}"),
        (f"pingpong {place}: libuv write / raw epoll", f"uv_write_{place}", f"raw_epoll_{place}"),
        (f"pingpong {place}: libuv try_write / raw epoll", f"uv_trywrite_{place}", f"raw_epoll_{place}"),
        (f"pingpong {place}: tokio / raw epoll", f"tokio_{place}", f"raw_epoll_{place}"),
        (f"pingpong {place}: mio / raw epoll", f"mio_{place}", f"raw_epoll_{place}"),
    ]
for place in ["cpu0", "any"]:
    RATIOS += [
        (f"lines {place}: evloop / libuv", f"evloop_{place}", f"uv_{place}"),
        (f"lines {place}: evloop / tokio write_all", f"evloop_{place}", f"tokio_{place}"),
        (f"lines {place}: evloop / tokio BufWriter", f"evloop_{place}", f"tokio_buf_{place}"),
        (f"lines {place}: evloop send / evloop write", f"evloop_send_{place}", f"evloop_{place}"),
        (f"lines {place}: evloop send / tokio write_all", f"evloop_send_{place}", f"tokio_{place}"),
        (f"lines {place}: evloop send / tokio BufWriter", f"evloop_send_{place}", f"tokio_buf_{place}"),
    ]
RATIOS += [
    ("spawn seq: evloop / raw posix_spawn+pidfd", "evloop_seq", "raw_pidfd_seq"),
    ("spawn seq: libuv / raw", "uv_seq", "raw_pidfd_seq"),
    ("spawn c50: evloop / libuv", "evloop_c50", "uv_c50"),
    ("spawn c50: evloop / raw", "evloop_c50", "raw_pidfd_c50"),
    ("spawn c50: tokio / raw", "tokio_c50", "raw_pidfd_c50"),
]


def parse(out):
    """METRIC lines (peers) and the final key=value line (evloop examples)."""
    m = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "METRIC":
            try:
                m[parts[1]] = float(parts[2])
            except ValueError:
                pass
        for k, v in re.findall(r"(\w+)=([-0-9.]+)", line):
            try:
                m[k] = float(v)
            except ValueError:
                pass
    if "ns_per_iter" in m and m["ns_per_iter"] > 0:
        m["iters_per_s"] = 1e9 / m["ns_per_iter"]
    if "spawns_per_s" not in m and "per_sec" in m:
        m["spawns_per_s"] = m["per_sec"]
    return m


def run(b):
    argv = b["argv"]
    if b["place"] == "cpu0":
        argv = ["taskset", "-c", "0"] + argv
    try:
        cp = subprocess.run(argv, capture_output=True, text=True, timeout=180)
    except (subprocess.TimeoutExpired, FileNotFoundError) as e:
        print(f"  {b['id']}: {e}", file=sys.stderr)
        return {}
    if cp.returncode != 0:
        print(f"  {b['id']}: exit {cp.returncode}: {cp.stderr.strip()[:200]}", file=sys.stderr)
        return {}
    return parse(cp.stdout)


def fmt(v):
    if v is None:
        return "-"
    if abs(v) >= 1e6:
        return f"{v / 1e6:.3g}M"
    if abs(v) >= 1e4:
        return f"{v / 1e3:.4g}k"
    return f"{v:.3g}"


def shuffled_within_blocks(benches, rng):
    """`benches` with each run of the same group and placement shuffled in place."""
    out, block = [], []
    for b in benches + [None]:
        if block and (b is None or (b["group"], b["place"]) != (block[0]["group"], block[0]["place"])):
            rng.shuffle(block)
            out += block
            block = []
        if b is not None:
            block.append(b)
    return out


def timed(args):
    benches = [b for b in BENCH if (PEERS or not b["peers"]) and (not args.only or args.only == b["group"])]
    if not any(b["group"] == "spawn" and not b["peers"] for b in benches):
        pass
    raw = {b["id"]: [] for b in benches}
    for r in range(args.reps):
        for b in shuffled_within_blocks(benches, random.Random(r)):
            raw[b["id"]].append(run(b))
        print(f"round {r + 1}/{args.reps} done", file=sys.stderr)
    print(f"## Timings ({args.reps} interleaved rounds; median [min-max])\n")
    print("| group | benchmark | placement | metric | median | min | max |")
    print("|---|---|---|---|---|---|---|")
    for b in benches:
        vals = [m.get(b["metric"]) for m in raw[b["id"]] if m.get(b["metric"]) is not None]
        if not vals:
            print(f"| {b['group']} | {b['id']} | {b['place']} | {b['metric']} | FAILED | | |")
            continue
        print(f"| {b['group']} | {b['id']} | {b['place']} | {b['metric']} | {fmt(statistics.median(vals))} "
              f"| {fmt(min(vals))} | {fmt(max(vals))} |")
    print("\n## Same-round ratios (median [min-max])\n")
    print("| ratio | median | min | max |")
    print("|---|---|---|---|")
    metric = {b["id"]: b["metric"] for b in benches}
    for label, num, den in RATIOS:
        # Ratio ids are written without their group, which is the label's first word.
        group = label.split()[0].rstrip(":")
        num, den = f"{group}_{num}", f"{group}_{den}"
        if num not in raw or den not in raw:
            continue
        vals = []
        for a, b in zip(raw[num], raw[den]):
            x, y = a.get(metric[num]), b.get(metric[den])
            if x and y:
                vals.append(x / y)
        if vals:
            print(f"| {label} | {statistics.median(vals):.3f} | {min(vals):.3f} | {max(vals):.3f} |")
    extra = [b for b in benches if b["id"] == "timers_evloop_timers"]
    for b in extra:
        lates = [m.get("late_ms_max") for m in raw[b["id"]] if m.get("late_ms_max") is not None]
        if lates:
            print(f"\nevloop timers: largest lateness, median over rounds: {statistics.median(lates):.1f} ms")


VALGRIND = os.environ.get("VALGRIND", "valgrind")


def ir(argv):
    """User-space instructions of the parent process under callgrind."""
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "cg.%p")
        cp = subprocess.run([VALGRIND, "--tool=callgrind", "--trace-children=no",
                             f"--callgrind-out-file={out}"] + argv, capture_output=True, text=True)
        # The parent's own lines: the first pid valgrind names (a forked child reports too).
        first = re.search(r"==(\d+)==", cp.stderr)
        m = first and re.search(rf"=={first.group(1)}== Collected : (\d+)", cp.stderr)
        if not m:
            raise RuntimeError(f"callgrind failed for {argv}: {cp.stderr[-500:]}")
        return int(m.group(1)), parse(cp.stdout)


def callgrind(args):
    version = subprocess.run([VALGRIND, "--version"], capture_output=True, text=True).stdout.strip()
    print(f"## User-space instructions per unit (callgrind, ΔIr / Δunits; {version})\n")
    print("| what | Ir per unit |")
    print("|---|---|")
    rows = []
    # Pump: 256 MiB vs 1280 MiB, i.e. 16384 more 64 KiB reads. How many wakeups and
    # empty reads a run takes depends on timing, so a large difference averages it out.
    writer = ["--child", peer("writer_child")[0]] if PEERS else []
    a, _ = ir(ex("pump", "--bytes", "256m", *writer))
    b, _ = ir(ex("pump", "--bytes", "1280m", *writer))
    rows.append(("evloop pump (per 64 KiB read)", (b - a) / 16384))
    if PEERS:
        wc = peer("writer_child")[0]
        for name, cmd in [("libuv pump", lambda n: peer("uv_pump", n, "64k", "0", "64k", wc)),
                          ("mio pump", lambda n: perf_peers("mio_pump", n, "64k", "0", "64k", wc))]:
            a, _ = ir(cmd("256m"))
            b, _ = ir(cmd("1280m"))
            rows.append((f"{name} (per 64 KiB read)", (b - a) / 16384))
    # The same with a 1 MiB pipe: the reader finds it full at each wakeup and reads up to 16
    # times, so this is the marginal cost of a read, with the wakeup's share small. The row
    # above depends on how often a wakeup finds more than one read's worth (timing).
    a, _ = ir(ex("pump", "--bytes", "256m", "--pipe-size", "1m", *writer))
    b, _ = ir(ex("pump", "--bytes", "768m", "--pipe-size", "1m", *writer))
    rows.append(("evloop pump, 1 MiB pipe (per 64 KiB read)", (b - a) / 8192))
    if PEERS:
        for name, cmd in [("libuv pump", lambda n: peer("uv_pump", n, "64k", "1m", "64k", wc)),
                          ("mio pump", lambda n: perf_peers("mio_pump", n, "64k", "1m", "64k", wc))]:
            a, _ = ir(cmd("256m"))
            b, _ = ir(cmd("768m"))
            rows.append((f"{name}, 1 MiB pipe (per 64 KiB read)", (b - a) / 8192))
    # Ping-pong: round trips are time-bounded, so divide by the reported counts.
    echo = peer("echo_child")[0] if PEERS else "cat"
    progs = [("evloop pingpong write", lambda s: ex("pingpong", "--secs", s, "--child", echo), "round_trips"),
             ("evloop pingpong try_write", lambda s: ex("pingpong", "--secs", s, "--child", echo, "--try-write"), "round_trips"),
             ("evloop pingpong send", lambda s: ex("pingpong", "--secs", s, "--child", echo, "--send"), "round_trips")]
    if PEERS:
        progs += [("libuv uv_write", lambda s: peer("uv_pingpong", "write", s, echo), "rt_per_s"),
                  ("libuv uv_try_write", lambda s: peer("uv_pingpong", "trywrite", s, echo), "rt_per_s"),
                  ("raw epoll", lambda s: peer("pingpong_raw", "epoll", s, echo), "rt_per_s")]
    for name, cmd, key in progs:
        a, ma = ir(cmd("0.5"))
        b, mb = ir(cmd("1.5"))
        na = ma[key] * (0.5 if key == "rt_per_s" else 1)
        nb = mb[key] * (1.5 if key == "rt_per_s" else 1)
        rows.append((f"{name} (per round trip)", (b - a) / (nb - na)))
    # Loop iterations: time-bounded too.
    a, ma = ir(ex("loop_bench", "--secs", "0.5"))
    b, mb = ir(ex("loop_bench", "--secs", "1.5"))
    rows.append(("evloop loop iteration", (b - a) / (mb["iters"] - ma["iters"])))
    if PEERS:
        for name, cmd in [("libuv loop iteration (idle pipe)", lambda s: peer("uv_loop", "idle_pipe", s)),
                          ("mio loop iteration (poll 0)", lambda s: perf_peers("mio_loop", s))]:
            a, ma = ir(cmd("0.5"))
            b, mb = ir(cmd("1.5"))
            rows.append((name, (b - a) / (mb["iters_per_s"] * 1.5 - ma["iters_per_s"] * 0.5)))
    # Spawns: 100 vs 300, parent only.
    spawns = [("evloop spawn", lambda n: ex("spawn_bench", "--count", n, "--concurrency", "1"))]
    if PEERS:
        spawns += [("libuv uv_spawn", lambda n: peer("uv_spawn", n, "1")),
                   ("std Command::status", lambda n: perf_peers("std_spawn", n)),
                   ("raw posix_spawn", lambda n: peer("spawn_raw", "pspawn", n, "1"))]
    for name, cmd in spawns:
        a, _ = ir(cmd("100"))
        b, _ = ir(cmd("300"))
        rows.append((f"{name} (per spawn, parent only)", (b - a) / 200))
    for name, v in rows:
        print(f"| {name} | {v:.0f} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--only", default=None)
    ap.add_argument("--callgrind", action="store_true")
    args = ap.parse_args()
    if args.callgrind:
        callgrind(args)
    else:
        timed(args)


if __name__ == "__main__":
    main()
