#!/usr/bin/env python3
"""Runs the test executables cargo built, several at once, and reports like `cargo test`.

`cargo test` runs one test executable after another: the end-to-end suites, which mostly wait
(for leases to expire, processes to start, a sandbox clock), then add up to about 15 minutes on
two cores. Here they run side by side, the longest first, each with its own log; every
executable's `test result:` line is printed (the totals come from them), and the output of a
failed one in full.

Usage: parallel-tests.py JOBS LOGDIR < jobs
Each job is one line: `name<TAB>cwd<TAB>ENV=VALUE ...<TAB>command ...` (fields separated by tabs,
ENV and command split on spaces). Exit code 0 only when every job passed.
"""
import concurrent.futures
import os
import subprocess
import sys
import time

# The suites that take longest start first (seconds in a sequential run on two cores).
LONGEST_FIRST = ["faults", "lifecycle", "writeback", "compat-writeback", "commit", "standby", "compat-standby",
                 "alerts", "fencing", "security", "fetcher", "center", "compose", "pipeline", "compat-pipeline"]


def parse(line):
    name, cwd, env, command = line.rstrip("\n").split("\t")
    extra = dict(kv.split("=", 1) for kv in env.split() if "=" in kv)
    return name, cwd, extra, command.split()


def run(job, logdir):
    name, cwd, extra, command = job
    log = os.path.join(logdir, f"{name}.log")
    started = time.monotonic()
    with open(log, "w") as out:
        rc = subprocess.call(command, cwd=cwd, env={**os.environ, **extra}, stdout=out, stderr=subprocess.STDOUT)
    return name, rc, time.monotonic() - started, log


def main():
    jobs_at_once, logdir = int(sys.argv[1]), sys.argv[2]
    os.makedirs(logdir, exist_ok=True)
    jobs = [parse(line) for line in sys.stdin if line.strip()]
    rank = {n: i for i, n in enumerate(LONGEST_FIRST)}
    jobs.sort(key=lambda j: rank.get(j[0], len(rank)))
    failed = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs_at_once) as pool:
        for future in concurrent.futures.as_completed([pool.submit(run, j, logdir) for j in jobs]):
            name, rc, took, log = future.result()
            text = open(log, errors="replace").read()
            results = [l for l in text.splitlines() if l.startswith("test result:")]
            print(f"== {name}: {'ok' if rc == 0 else f'FAILED (exit {rc})'} in {took:.0f} s", flush=True)
            if rc == 0:
                for line in results:
                    print(line, flush=True)
            else:
                failed.append(name)
                print(text, flush=True)  # its `test result:` line included, once
    if failed:
        print(f"failed: {' '.join(sorted(failed))}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
