#!/usr/bin/env python3
"""The results of `make bench`: collects the rows the figures record, then
prints them as a table and writes bench/RESULTS.md and bench/results.json.

    report.py add FIGURES.jsonl KEY=VALUE...     record one figure (bench/lib.sh `figure`)
    report.py report RUN_DIR [--write DIR]       print the table; with --write, write the files

Keys of a figure: id, title, unit, ours, ref, ref_name, better (higher or
lower), goal, goal_on (value or ratio), goal_text, note, ref_note, run (the
`scripts/bench.sh` argument that reruns it), command (the load or timing
command), setup (how the processes under test were started), details (JSON).
"""

import argparse
import json
import os
import platform
import re
import sys
from datetime import datetime, timezone

NUMBERS = {"ours", "ref", "goal"}
# Peak RSS goal for each of our services, in KiB.
RSS_GOAL_KIB = 64 * 1024
SERVICES = ("audit-service", "user-service")


def service_of(process):
    """The service a run's process is, by its label: the replicas of the
    scale figure (audit-1..) and the log on and off of figure 10
    (audit-log-on, audit-log-off) are audit-service too."""
    if process == "audit-service" or re.fullmatch(r"audit-(\d+|log-on|log-off)", process):
        return "audit-service"
    return process if process in SERVICES else None


def add(path, pairs):
    row = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            sys.exit(f"report.py add: {pair!r} is not KEY=VALUE")
        if key in NUMBERS:
            value = float(value)
        elif key == "details":
            value = json.loads(value)
        row[key] = value
    for key in ("id", "title", "unit", "ours"):
        if key not in row:
            sys.exit(f"report.py add: {key}= is missing")
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def judged(row):
    """Adds ratio and goal_met to a figure row."""
    ref = row.get("ref")
    row["ratio"] = round(row["ours"] / ref, 3) if ref else None
    goal = row.get("goal")
    if goal is None:
        row["goal_met"] = None
    else:
        value = row["ratio"] if row.get("goal_on") == "ratio" else row["ours"]
        if value is None:
            row["goal_met"] = None
        elif row.get("better", "higher") == "higher":
            row["goal_met"] = value >= goal
        else:
            row["goal_met"] = value < goal
    return row


def machine(run):
    def read(name):
        try:
            with open(os.path.join(run, name)) as f:
                return f.read().strip()
        except OSError:
            return None

    cpu = None
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "date": read("started") or datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": read("commit"),
        "loadavg_start": read("load.start"),
        "loadavg_end": read("load.end"),
        "notes": (read("notes.txt") or "").splitlines(),
    }


def rss_rows(run):
    rows = []
    try:
        with open(os.path.join(run, "rss.tsv")) as f:
            for line in f:
                figure, process, kib = line.rstrip("\n").split("\t")
                kib = int(kib)
                is_service = service_of(process) is not None
                rows.append({
                    "figure": figure,
                    "process": process,
                    "peak_rss_kib": kib,
                    "goal_kib": RSS_GOAL_KIB if is_service else None,
                    "goal_met": kib < RSS_GOAL_KIB if is_service else None,
                })
    except FileNotFoundError:
        pass
    return rows


def rss_figures(rss):
    """One row per service: its highest peak RSS over every figure's run."""
    rows = []
    for service in SERVICES:
        runs = [r for r in rss if service_of(r["process"]) == service]
        if not runs:
            continue
        top = max(runs, key=lambda r: r["peak_rss_kib"])
        rows.append({
            "id": f"rss_{service.split('-')[0]}",
            "title": f"6. {service} peak RSS, the highest of its {len(runs)} runs",
            "unit": "MiB",
            "ours": round(top["peak_rss_kib"] / 1024, 1),
            "note": f"in {top['figure']}" + ("" if top["process"] == service else f" ({top['process']})"),
            "better": "lower",
            "goal": RSS_GOAL_KIB / 1024,
            "goal_text": "< 64 MiB",
            "command": "VmHWM from /proc/PID/status just before stopping it",
        })
    return rows


def number(value, unit=""):
    if value is None:
        return "—"
    if unit == "MiB":
        return f"{value:.1f} MiB"
    if unit == "ms":
        return f"{value:.2f} ms"
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return f"{text} {unit}".strip()


def cells(row):
    ours = number(row["ours"], row["unit"])
    if row.get("note"):
        ours += f" ({row['note']})"
    ref = "—"
    if row.get("ref") is not None:
        ref = f"{number(row['ref'], row['unit'])}: {row.get('ref_name', '')}"
        if row.get("ref_note"):
            ref += f" ({row['ref_note']})"
    ratio = f"{row['ratio']:.2f}x" if row["ratio"] is not None else "—"
    goal = row.get("goal_text", "—")
    if row["goal_met"] is not None:
        goal += " — " + ("met" if row["goal_met"] else "MISSED")
    return ours, ref, ratio, goal


def text_table(figures, rss):
    lines = []
    for row in figures:
        ours, ref, ratio, goal = cells(row)
        lines.append(f"{row['title']}")
        lines.append(f"    ours {ours} | reference {ref} | ratio {ratio} | goal {goal}")
    if rss:
        lines.append("peak RSS (VmHWM, or ru_maxrss for tools that exit by themselves):")
        for r in rss:
            flag = ""
            if r["goal_met"] is not None:
                flag = "  < 64 MiB: " + ("met" if r["goal_met"] else "MISSED")
            lines.append(f"    {r['figure']:<14} {r['process']:<26} {r['peak_rss_kib'] / 1024:7.1f} MiB{flag}")
    return "\n".join(lines)


def markdown(figures, rss, info):
    out = ["# make bench: results", ""]
    out.append(
        f"Machine: {info['nproc']} CPUs ({info['cpu']}), Linux {info['kernel']}; "
        f"run started {info['date']}, commit `{info['commit']}`; "
        f"load average at start `{info['loadavg_start']}`, at end `{info['loadavg_end']}`."
    )
    out.append("")
    out.append("What each figure is, and why: [README.md](README.md). "
               "Rerun one with `scripts/bench.sh NAME` (the name in the command column).")
    out.append("")
    out.append("| figure | ours | reference | ratio | goal | command |")
    out.append("|---|---|---|---|---|---|")
    for row in figures:
        ours, ref, ratio, goal = cells(row)
        command = f"`scripts/bench.sh {row['run']}`: " if row.get("run") else ""
        if row.get("command"):
            command += f"`{row['command']}`"
        out.append(f"| {row['title']} | {ours} | {ref} | {ratio} | {goal} | {command} |")
    out.append("")
    if info["notes"]:
        out.append("Seen during the run:")
        out.append("")
        out += [f"- {n}" for n in info["notes"]]
        out.append("")
    out.append("## Peak RSS of every process")
    out.append("")
    out.append("Read from `/proc/PID/status` (VmHWM) just before each service is stopped; "
               "for tools that exit by themselves (wrk, kcat, the examples), GNU time's maximum RSS.")
    out.append("")
    out.append("| figure | process | peak RSS | goal |")
    out.append("|---|---|---|---|")
    for r in rss:
        goal = "—"
        if r["goal_met"] is not None:
            goal = "< 64 MiB — " + ("met" if r["goal_met"] else "MISSED")
        out.append(f"| {r['figure']} | {r['process']} | {r['peak_rss_kib'] / 1024:.1f} MiB | {goal} |")
    out.append("")
    out.append("## How each figure was run")
    out.append("")
    for row in figures:
        out.append(f"**{row['title']}**")
        out.append("")
        out.append("```")
        if row.get("setup"):
            out.append(row["setup"])
        if row.get("command"):
            out.append(row["command"])
        out.append("```")
        out.append("")
    return "\n".join(out)


def report(run, write):
    figures = []
    try:
        with open(os.path.join(run, "figures.jsonl")) as f:
            figures = [judged(json.loads(line)) for line in f if line.strip()]
    except FileNotFoundError:
        pass
    rss = rss_rows(run)
    figures += [judged(row) for row in rss_figures(rss)]
    info = machine(run)
    print(text_table(figures, rss))
    for n in info["notes"]:
        print(f"note: {n}")
    targets = [run] + ([write] if write else [])
    for target in targets:
        with open(os.path.join(target, "results.json"), "w") as f:
            json.dump({"machine": info, "figures": figures, "rss": rss}, f, indent=2)
            f.write("\n")
        with open(os.path.join(target, "RESULTS.md"), "w") as f:
            f.write(markdown(figures, rss, info) + "\n")
    if write:
        print(f"written: {write}/RESULTS.md and {write}/results.json")


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("add")
    a.add_argument("path")
    a.add_argument("pairs", nargs="+")
    r = sub.add_parser("report")
    r.add_argument("run")
    r.add_argument("--write")
    args = parser.parse_args()
    if args.cmd == "add":
        add(args.path, args.pairs)
    else:
        report(args.run, args.write)


if __name__ == "__main__":
    main()
