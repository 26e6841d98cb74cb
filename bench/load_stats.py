#!/usr/bin/env python3
"""Helpers of bench/sip-load.sh.

  load_stats.py step LOAD.json P99_MS      -> "verdict ok failed retrans reg_p99 pub_p99 gen_cpu"
                                              (verdict ok: < 0.1 % failed calls and p99 < P99_MS
                                              for every method; latencies in ms)
  load_stats.py lat LOAD.json METHOD       -> "p50 p90 p99 p99.9 max" of METHOD, ms
  load_stats.py field JSON KEY             -> a top-level field of a JSON object
  load_stats.py cpu PID...                 -> utime+stime of the PIDs and their children, seconds
  load_stats.py rb PORT                    -> receive buffer (bytes) of the UDP socket on PORT
"""

import json
import os
import subprocess
import sys


def ms(us):
    return f"{us / 1000.0:.3f}"


def step(path, p99_ms):
    with open(path) as f:
        r = json.load(f)
    calls, ok, failed = r["calls"], r["calls_ok"], r["calls_failed"]
    p99 = {m: v["latency_us"]["p99"] for m, v in r["methods"].items()}
    good = ok + failed >= calls and failed * 1000 < calls and all(
        v < p99_ms * 1000 for v in p99.values()
    )
    print(
        "ok" if good else "FAIL",
        ok,
        failed,
        r["retransmissions"],
        ms(p99.get("REGISTER", 0)),
        ms(p99.get("PUBLISH", 0)),
        r["generator_cpu_secs"],
    )


def lat(path, method):
    with open(path) as f:
        r = json.load(f)
    m = r["methods"].get(method)
    if m is None:
        print("- - - - -")
        return
    l = m["latency_us"]
    print(ms(l["p50"]), ms(l["p90"]), ms(l["p99"]), ms(l["p99.9"]), ms(l["max"]))


def field(path, key):
    with open(path) as f:
        print(json.load(f)[key])


def cpu(pids):
    tck = os.sysconf("SC_CLK_TCK")
    seen, todo, children = set(), [int(p) for p in pids], {}
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


def rb(port):
    out = subprocess.run(
        ["ss", "-Huamn", f"sport = :{port}"], capture_output=True, text=True
    ).stdout
    sizes = sorted(
        {
            int(part[2:])
            for tok in out.split()
            if tok.startswith("skmem:(")
            for part in tok[len("skmem:(") :].rstrip(")").split(",")
            if part.startswith("rb")
        }
    )
    print(",".join(str(s) for s in sizes) or "-")


def main():
    cmd = sys.argv[1]
    if cmd == "step":
        step(sys.argv[2], float(sys.argv[3]))
    elif cmd == "lat":
        lat(sys.argv[2], sys.argv[3])
    elif cmd == "field":
        field(sys.argv[2], sys.argv[3])
    elif cmd == "cpu":
        cpu(sys.argv[2:])
    elif cmd == "rb":
        rb(sys.argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
