#!/usr/bin/env python3
"""Reads SIPp's statistics files for bench/sip-load.sh.

  sipp_stats.py summary STAT.csv   -> "created successful failed retransmissions" (last row,
                                      cumulative counters of -trace_stat / -stf)
  sipp_stats.py rtt RTT.csv [N]    -> "rtd count p50_ms p99_ms" per response-time counter of a
                                      -trace_rtt file (rtd 1 = REGISTER, 2 = PUBLISH in
                                      tests/sipp/load_*.xml); N = rtd to print alone
  sipp_stats.py cpu PID...         -> utime+stime of the PIDs and their children, in seconds
"""

import os
import sys


def summary(path):
    with open(path) as f:
        rows = [line.rstrip("\n").split(";") for line in f if line.strip()]
    head, last = rows[0], rows[-1]
    col = {name: i for i, name in enumerate(head)}

    def get(name):
        return int(float(last[col[name]]))

    print(
        get("TotalCallCreated"),
        get("SuccessfulCall(C)"),
        get("FailedCall(C)"),
        get("Retransmissions(C)"),
    )


def percentile(sorted_values, p):
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, int(round(p / 100.0 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def rtt(path, only=None):
    by_rtd = {}
    with open(path) as f:
        for line in f:
            parts = line.strip().split(";")
            if len(parts) < 3:
                continue
            try:
                ms = float(parts[1])
            except ValueError:
                continue  # header
            by_rtd.setdefault(parts[2], []).append(ms)
    for rtd in sorted(by_rtd):
        if only is not None and rtd != only:
            continue
        v = sorted(by_rtd[rtd])
        print(rtd, len(v), f"{percentile(v, 50):.3f}", f"{percentile(v, 99):.3f}")


def cpu(pids):
    tck = os.sysconf("SC_CLK_TCK")
    seen = set()
    todo = [int(p) for p in pids]
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                children.setdefault(int(fields[1]), []).append(int(entry))
            except (OSError, IndexError):
                pass
    total = 0
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            # fields[0] is state (stat field 3): utime = field 14, stime = field 15.
            total += int(fields[11]) + int(fields[12])
        except OSError:
            continue
        todo.extend(children.get(p, []))
    print(f"{total / tck:.2f}")


def main():
    cmd = sys.argv[1]
    if cmd == "summary":
        summary(sys.argv[2])
    elif cmd == "rtt":
        rtt(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
    elif cmd == "cpu":
        cpu(sys.argv[2:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
