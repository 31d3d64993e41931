#!/usr/bin/env python3
"""Compile-time benchmark driver (issue #17, item 1). See README.md in this directory.

Generates the crates (generate.py) under target/compile_time/, builds every dependency once
(check, debug and release), then for each crate and each of `cargo check`, `cargo build` and
`cargo build --release`: touches the crate's src/main.rs and times the cargo invocation under
`/usr/bin/time -v` (wall time and "Maximum resident set size", which is that of the largest
process cargo ran: rustc). Each measurement runs --reps times (default 3), crates interleaved;
`cargo check`, which takes half a second and moves most with the machine's load, runs
--check-reps more times (default 10) in rounds of its own; the median is reported. Prints a markdown table and writes it to RESULTS.md beside this script.

The library measured is a snapshot of the repository's HEAD commit (`git archive`) under
target/compile_time/, so concurrent edits of src/ neither rebuild it nor end up in the numbers.

The `peer` form (jwilger/eventcore 2.0.1 from crates.io) is measured only when asked for:
`--forms eventcore,shared,discovery,hand,hand-discovery,peer`. Its crates resolve their own dependencies, once online
(`cargo fetch`), before the --offline builds.

Usage: python3 benches/compile_time/run.py [--reps 3] [--check-reps 10] [--ns 50,100] [--k 4] [--no-write]
       [--no-instructions] [--forms eventcore,shared,discovery,hand,hand-discovery[,peer]]
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import generate  # noqa: E402

REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
WORK = os.path.join(REPO, "target", "compile_time")
TARGET = os.path.join(WORK, "target")
SAMPLES = os.path.join(WORK, "samples.json")
MODES = {
    "check": ["cargo", "check", "--offline"],
    "debug": ["cargo", "build", "--offline"],
    "release": ["cargo", "build", "--release", "--offline"],
}
FORM_NAMES = {
    "eventcore": "eventcore (book form)",
    "shared": "eventcore, slots shared",
    "discovery": "eventcore + discovery",
    "hand": "hand-written on Backend",
    "hand-discovery": "hand-written on Backend + discovery",
    "peer": f"jwilger/eventcore {generate.PEER_VERSION} (peer)",
}


def sh(cmd, cwd, check=True):
    env = dict(os.environ, CARGO_TARGET_DIR=TARGET)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=check)


def snapshot():
    """Extracts HEAD into target/compile_time/eventcore-<sha>; returns (path, sha)."""
    sha = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    path = os.path.join(WORK, f"eventcore-{sha[:12]}")
    if not os.path.exists(os.path.join(path, "Cargo.toml")):
        os.makedirs(path, exist_ok=True)
        archive = subprocess.Popen(["git", "archive", sha], cwd=REPO, stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "-C", path], stdin=archive.stdout, check=True)
        archive.wait()
    return path, sha


def timed(cmd, cwd):
    """Runs cmd under /usr/bin/time -v; returns (wall seconds, peak RSS in MB, CPU seconds)."""
    env = dict(os.environ, CARGO_TARGET_DIR=TARGET)
    start = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-v"] + cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if p.returncode != 0:
        sys.exit(f"failed in {cwd}: {' '.join(cmd)}\n{p.stderr[-4000:]}")
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr).group(1))
    cpu = sum(float(re.search(rf"{what} time \(seconds\): ([\d.]+)", p.stderr).group(1)) for what in ("User", "System"))
    return wall, rss_kb / 1024, cpu


def check_instructions(out_dir, main_rs):
    """Instructions rustc executes for an incremental `cargo check` of the touched crate, counted
    by callgrind: deterministic (two runs agree to a few thousand in a billion), so unlike wall
    time it does not move with other load on the machine. The rustc command is the one cargo
    runs (`cargo check -v`), run again under valgrind after touching the crate once more."""
    os.utime(main_rs)
    p = sh(MODES["check"] + ["-v"], out_dir)
    line = next(l for l in p.stderr.splitlines() if "Running `" in l and "--crate-name ct_" in l)
    cmd = line.split("Running `", 1)[1].rsplit("`", 1)[0]
    os.utime(main_rs)
    q = subprocess.run(
        f"valgrind --tool=callgrind --callgrind-out-file=/dev/null {cmd}",
        shell=True, cwd=out_dir, capture_output=True, text=True,
        env=dict(os.environ, CARGO_TARGET_DIR=TARGET),
    )
    found = re.search(r"Collected : (\d+)", q.stderr)
    if q.returncode != 0 or not found:
        sys.exit(f"callgrind failed in {out_dir}:\n{q.stderr[-3000:]}")
    return int(found.group(1))


def fetch_peer(crates):
    """The peer's crates depend on crates.io, not on the snapshot, and get no copy of the
    repository's Cargo.lock: `cargo fetch`, online, resolves the first one's lockfile (unless an
    earlier run left one) and downloads its dependencies, so the builds after it work --offline.
    The other peer crates get a copy of that lockfile, so every N builds the same versions."""
    lock = None
    for (form, n), (out_dir, _, _) in crates.items():
        if form != "peer":
            continue
        own = os.path.join(out_dir, "Cargo.lock")
        if lock and not os.path.exists(own):
            shutil.copy(lock, own)
        p = sh(["cargo", "fetch"], out_dir, check=False)
        if p.returncode != 0:
            sys.exit(f"peer N={n}: cargo fetch failed (network?):\n{p.stderr[-4000:]}")
        lock = lock or own


def text_size(binary):
    """The `text` column of `size` (Berkeley format): code and read-only data."""
    out = subprocess.run(["size", binary], capture_output=True, text=True, check=True).stdout
    return int(out.splitlines()[1].split()[0])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument(
        "--check-reps", type=int, default=10,
        help="extra interleaved rounds of `cargo check` alone (cheap, and the noisiest figure)",
    )
    ap.add_argument("--ns", default="50,100")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--forms", default="eventcore,shared,discovery,hand,hand-discovery")
    ap.add_argument("--no-write", action="store_true", help="print only, do not write RESULTS.md")
    ap.add_argument("--render", action="store_true", help=f"only redo the tables from {SAMPLES}")
    ap.add_argument(
        "--no-instructions", action="store_true",
        help="skip counting `cargo check`'s instructions under valgrind (callgrind)",
    )
    args = ap.parse_args()
    if args.render:
        with open(SAMPLES) as f:
            return report(json.load(f), write=not args.no_write)
    ns = [int(n) for n in args.ns.split(",")]
    forms = args.forms.split(",")
    unknown = [form for form in forms if form not in generate.FORMS]
    if unknown:
        ap.error(f"unknown form(s) {', '.join(unknown)}; known: {', '.join(generate.FORMS)}")
    began = time.perf_counter()

    eventcore_path, sha = snapshot()
    crates = {}
    for form in forms:
        for n in ns:
            out_dir = os.path.join(WORK, f"{form}-n{n}-k{args.k}")
            main_rs = generate.write_crate(form, n, args.k, out_dir, eventcore_path, os.path.join(REPO, "Cargo.lock"))
            crates[(form, n)] = (out_dir, main_rs, f"ct_{form}_n{n}_k{args.k}")
    fetch_peer(crates)

    # Warm-up, untimed: dependencies once per profile, each crate once per mode, and one run of
    # every binary (each command executes on Memory; a failing command panics).
    print(f"eventcore {sha[:12]}; warming up (dependencies and every crate once) ...", flush=True)
    for (form, n), (out_dir, _, name) in crates.items():
        for mode, cmd in MODES.items():
            p = sh(cmd, out_dir, check=False)
            if p.returncode != 0:
                sys.exit(f"{form} N={n} does not compile ({mode}):\n{p.stderr[-6000:]}")
        run = subprocess.run([os.path.join(TARGET, "release", name)], capture_output=True, text=True)
        if run.returncode != 0:
            sys.exit(f"{name} failed at run time:\n{run.stderr}")
    print(f"warm-up done in {time.perf_counter() - began:.0f} s; measuring", flush=True)

    samples = {(key, mode): [] for key in crates for mode in MODES}
    for rep in range(args.reps):
        for key, (out_dir, main_rs, _) in crates.items():
            for mode, cmd in MODES.items():
                os.utime(main_rs)
                samples[(key, mode)].append(timed(cmd, out_dir))
        print(f"  round {rep + 1}/{args.reps} done ({time.perf_counter() - began:.0f} s)", flush=True)
    for rep in range(args.check_reps):
        for key, (out_dir, main_rs, _) in crates.items():
            os.utime(main_rs)
            samples[(key, "check")].append(timed(MODES["check"], out_dir))
    if args.check_reps:
        print(f"  {args.check_reps} more rounds of `cargo check` done ({time.perf_counter() - began:.0f} s)", flush=True)

    instructions = {}
    if not args.no_instructions:
        for key, (out_dir, main_rs, _) in crates.items():
            instructions[key] = check_instructions(out_dir, main_rs)
        print(f"  instructions counted ({time.perf_counter() - began:.0f} s)", flush=True)

    size = {key: text_size(os.path.join(TARGET, "release", name)) for key, (_, _, name) in crates.items()}
    data = {
        "sha": sha,
        "k": args.k,
        "reps": args.reps,
        "check_reps": args.check_reps,
        "ns": ns,
        "forms": forms,
        "minutes": (time.perf_counter() - began) / 60,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "samples": [
            {"form": key[0], "n": key[1], "mode": mode, "runs": runs} for (key, mode), runs in samples.items()
        ],
        "text": [{"form": key[0], "n": key[1], "bytes": b} for key, b in size.items()],
        "instructions": [{"form": key[0], "n": key[1], "ir": ir} for key, ir in instructions.items()],
    }
    with open(SAMPLES, "w") as f:
        json.dump(data, f, indent=1)
    report(data, write=not args.no_write)


def baseline(form, forms):
    """The hand-written form a form is compared with: `hand-discovery` for `discovery` (the
    same two rounds of reads, by hand) when it was measured, `hand` otherwise."""
    if form in ("discovery", "hand-discovery") and "hand-discovery" in forms:
        return "hand-discovery"
    return "hand"


def report(data, write):
    """Prints the tables from the raw samples and, if `write`, writes RESULTS.md."""
    sha, k, ns, forms, took = data["sha"], data["k"], data["ns"], data["forms"], data["minutes"] * 60
    samples = {((s["form"], s["n"]), s["mode"]): s["runs"] for s in data["samples"]}
    size = {(t["form"], t["n"]): t["bytes"] for t in data["text"]}
    crates = [(form, n) for form in forms for n in ns]
    med = {}
    for (key, mode), runs in samples.items():
        med[(key, mode)] = tuple(statistics.median(r[i] for r in runs) for i in range(3))
    fastest = {(key, mode): min(r[0] for r in runs) for (key, mode), runs in samples.items()}

    lines = [
        f"### Per crate (K={k}; median of {data['reps']}, `cargo check` of {data['reps'] + data.get('check_reps', 0)}; times in seconds, peak RSS in MB)",
        "",
        "| form | N | `cargo check` | `cargo build` | `cargo build --release` "
        "| release CPU s | peak RSS check | peak RSS debug | peak RSS release | release `text` bytes | `text` / N |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (form, n) in crates:
        c, d, r = (med[((form, n), m)] for m in MODES)
        lines.append(
            f"| {FORM_NAMES[form]} | {n} | {c[0]:.2f} | {d[0]:.2f} | {r[0]:.2f} | {r[2]:.2f} "
            f"| {c[1]:.0f} | {d[1]:.0f} | {r[1]:.0f} | {size[(form, n)]:,} | {size[(form, n)] // n:,} |"
        )
    if len(ns) >= 2:
        lo, hi = min(ns), max(ns)
        dn = hi - lo
        lines += [
            "",
            f"### Per command: slope between N={lo} and N={hi} (K={k})",
            "",
            "| form | `cargo check` ms/cmd | `cargo build` ms/cmd | release build ms/cmd "
            "| release build ms/cmd, fastest runs | release CPU ms/cmd | release peak RSS MB/cmd "
            "| release `text` bytes/cmd |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for form in forms:
            s = [(med[((form, hi), m)][0] - med[((form, lo), m)][0]) / dn * 1000 for m in MODES]
            quick = (fastest[((form, hi), "release")] - fastest[((form, lo), "release")]) / dn * 1000
            cpu = (med[((form, hi), "release")][2] - med[((form, lo), "release")][2]) / dn * 1000
            rss = (med[((form, hi), "release")][1] - med[((form, lo), "release")][1]) / dn
            txt = (size[(form, hi)] - size[(form, lo)]) / dn
            lines.append(
                f"| {FORM_NAMES[form]} | {s[0]:.1f} | {s[1]:.1f} | {s[2]:.1f} | {quick:.1f} | {cpu:.1f} | {rss:.2f} | {txt:,.0f} |"
            )
        if "hand" in forms:
            lines += [
                "",
                f"### Ratios to the hand-written baseline (same N, K={k}; the discovery form to the hand-written discovery; target for `cargo check`: <= 1.2)",
                "",
                "| form | N | `cargo check` | `cargo build` | release build | release peak RSS | release `text` |",
                "|---|---:|---:|---:|---:|---:|---:|",
            ]
            for form in forms:
                if form in ("hand", "hand-discovery"):
                    continue
                base = baseline(form, forms)
                for n in ns:
                    rat = [med[((form, n), m)][0] / med[((base, n), m)][0] for m in MODES]
                    rr = med[((form, n), "release")][1] / med[((base, n), "release")][1]
                    ts = size[(form, n)] / size[(base, n)]
                    lines.append(
                        f"| {FORM_NAMES[form]} | {n} | {rat[0]:.2f}x | {rat[1]:.2f}x | {rat[2]:.2f}x "
                        f"| {rr:.2f}x | {ts:.2f}x |"
                    )
    ir = {(t["form"], t["n"]): t["ir"] for t in data.get("instructions", [])}
    if ir:
        lines += [
            "",
            "### `cargo check` in instructions (callgrind; deterministic, so the figure to compare)",
            "",
            "| form | N | instructions (millions) | per command, slope (millions) | ratio to hand-written |",
            "|---|---:|---:|---:|---:|",
        ]
        for (form, n) in crates:
            slope = ""
            if len(ns) >= 2 and n == max(ns):
                lo = min(ns)
                slope = f"{(ir[(form, n)] - ir[(form, lo)]) / (n - lo) / 1e6:.2f}"
            base = baseline(form, forms)
            ratio = f"{ir[(form, n)] / ir[(base, n)]:.2f}x" if (base, n) in ir else ""
            lines.append(f"| {FORM_NAMES[form]} | {n} | {ir[(form, n)] / 1e6:,.0f} | {slope} | {ratio} |")
    table = "\n".join(lines)
    print()
    print(table)
    print(f"\n(total {took / 60:.1f} min)")
    if not write:
        return

    rustc = subprocess.run(["rustc", "-V"], capture_output=True, text=True).stdout.strip()
    cpu = next(
        (l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?"
    )
    now = data["date"]
    quoted = (
        "The issue's peer figures (jwilger/eventcore 2.0.1, 100 commands over 4 streams, measured for\n"
        "issue #17 on this machine): `cargo check` 0.23 s, `cargo build` 0.40 s, `cargo build --release`\n"
        "9.4 s with 476 MB peak, for the whole crate."
    )
    if "peer" in forms:
        peer_note = (
            f"The rows \"{FORM_NAMES['peer']}\" are that library measured in this run, in the form its\n"
            "documentation teaches (see README.md), with its slope per command. " + quoted + "\n"
            "Where this run's peer rows differ from those figures (its release build above all), the rows\n"
            "are the comparison to use: same machine, same run, same work per command.\n"
        )
    else:
        peer_note = (
            quoted + " Only the whole-crate figure is\n"
            "known for the peer, so its per-command release cost is at most 9.4 s / 100 = 94 ms (an upper\n"
            "bound: its fixed cost, linking and `main` included, is in that figure); the slope above\n"
            "excludes the fixed cost. `--forms eventcore,shared,discovery,hand,peer` measures the peer itself.\n"
        )
    with open(os.path.join(HERE, "RESULTS.md"), "w") as f:
        f.write(
            f"""# Compile-time benchmark: results

Measured {now} on eventcore `{sha[:12]}` (HEAD at the time, extracted with `git archive`).
Machine: {os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}, {rustc}; a
virtual machine whose load and speed vary from run to run, so read differences in wall time
under about 10% as noise (the instruction counts do not move). Total run time of the script: {took / 60:.1f} min.

Command: `python3 benches/compile_time/run.py --forms {','.join(forms)}` (reps={data['reps']}, check-reps={data.get('check_reps', 0)}, N in {{{','.join(map(str, ns))}}}, K={k}).
Each number is the median of {data['reps']} runs ({data['reps'] + data.get('check_reps', 0)} for `cargo check`) of, in the generated crate's directory, with
`CARGO_TARGET_DIR=target/compile_time/target` and every dependency already built:

    touch src/main.rs && /usr/bin/time -v cargo check --offline
    touch src/main.rs && /usr/bin/time -v cargo build --offline
    touch src/main.rs && /usr/bin/time -v cargo build --release --offline

Times are the wall time of the cargo invocation ("release CPU s" is its user + system CPU time,
children included: less sensitive to other load on the machine than wall time, and above it
when rustc's codegen units run in parallel); peak RSS is `/usr/bin/time`'s "Maximum resident
set size", the largest process cargo ran (rustc compiling the crate); `text` is the `text` column
of `size` on the release binary (code and read-only data, dependencies included: the per-command
slope is the figure that isolates the generated code). The instruction counts are rustc's
alone, for the touched crate's incremental `cargo check`, under `valgrind --tool=callgrind`:
unlike the times they do not move with the machine's load. What each form contains is described
in README.md.

{table}

{peer_note}"""
        )
    print(f"wrote {os.path.join(HERE, 'RESULTS.md')}")


if __name__ == "__main__":
    main()
