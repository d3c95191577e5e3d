#!/usr/bin/env python3
"""Turn bench/run.sh's raw results into the table: medians per figure, and the ratio oriented so
that > 1 means Berth is better. Prints it, and writes it into a markdown file between the
`<!-- bench:begin -->` and `<!-- bench:end -->` markers (the rest of the file is left alone).

usage: report.py RESULTS.tsv META.txt OUT.md|-
"""
import statistics
import sys
from collections import defaultdict

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def figures(meta):
    five = int(meta["five_bytes"]) / 1e6
    big_bytes = int(meta["big_bytes"])
    big = f"{big_bytes / 2**30:.0f} GiB" if big_bytes >= 2**30 * 0.9 else f"{big_bytes / 2**20:.0f} MiB"
    many = meta["many_count"]
    conns = meta["connections"]
    rows = [
        # key, label, unit, better, companion key shown in brackets (wall seconds)
        ("push_five_mbps", f"push 5-layer image ({five:.0f} MB), skopeo", "MB/s", "higher", "push_five_s"),
        ("pull_five_mbps", f"pull 5-layer image ({five:.0f} MB), skopeo", "MB/s", "higher", "pull_five_s"),
        ("push_big_mbps", f"push {big} layer, skopeo", "MB/s", "higher", "push_big_s"),
        ("pull_big_mbps", f"pull {big} layer, skopeo", "MB/s", "higher", "pull_big_s"),
        ("push_many_s", f"push {many}-layer image, skopeo", "s", "lower", None),
        ("parallel_pull_mbps", "8 parallel pulls of the 5-layer image, aggregate", "MB/s", "higher", None),
    ]
    for key, label in [
        ("manifest_get_tag", "manifest GET by tag"),
        ("manifest_get_digest", "manifest GET by digest"),
        ("manifest_head", "manifest HEAD"),
        ("blob_head", "blob HEAD"),
        ("tags_list", "tags list"),
        ("base", "GET /v2/"),
    ]:
        rows.append((f"{key}_rps", f"{label} ({conns} conns)", "req/s", "higher", None))
        rows.append((f"{key}_p50", f"{label}: p50 latency", "ms", "lower", None))
        rows.append((f"{key}_p99", f"{label}: p99 latency", "ms", "lower", None))
    rows += [
        ("cpu_push_per_gib", f"registry CPU per GiB pushed ({big} layer)", "CPU-s", "lower", None),
        ("cpu_pull_per_gib", f"registry CPU per GiB pulled ({big} layer)", "CPU-s", "lower", None),
        ("peak_rss_push_big", f"registry peak RSS during the {big} push", "MiB", "lower", None),
    ]
    return rows


def fmt(v, unit):
    if unit in ("req/s",):
        return f"{v:,.0f}"
    if unit in ("ms",):
        return f"{v:.2f}"
    if unit in ("MB/s", "MiB"):
        return f"{v:.1f}"
    return f"{v:.2f}"


def main():
    results_path, meta_path, out = sys.argv[1:4]
    meta = dict(line.rstrip("\n").split("=", 1) for line in open(meta_path) if "=" in line)
    values = defaultdict(list)  # (figure, registry) -> [values by run]
    for line in open(results_path):
        figure, registry, run, value = line.rstrip("\n").split("\t")
        values[(figure, registry)].append(float(value))
    med = {k: statistics.median(v) for k, v in values.items()}

    table = []
    for key, label, unit, better, companion in figures(meta):
        d, b = med.get((key, "distribution")), med.get((key, "berth"))
        if d is None or b is None:
            continue
        if better == "higher":
            ratio = b / d if d else float("inf")
        else:
            ratio = d / b if b else float("inf")

        def cell(v, reg):
            text = f"{fmt(v, unit)} {unit}"
            if companion and (companion, reg) in med:
                text += f" ({med[(companion, reg)]:.2f} s)"
            return text

        table.append((label, cell(d, "distribution"), cell(b, "berth"), f"{ratio:.2f}"))

    header = ("figure", "Distribution", "Berth", "ratio")
    widths = [max(len(r[i]) for r in table + [header]) for i in range(4)]
    line = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    print(line(header))
    print("  ".join("-" * w for w in widths))
    for r in table:
        print(line(r))
    below = [r[0] for r in table if float(r[3]) < 1.0]
    print(f"\n{len(table) - len(below)} of {len(table)} rows at ratio >= 1.0" + (f"; below: {', '.join(below)}" if below else ""))

    if out == "-":
        return
    md = [
        BEGIN,
        f"Measured {meta['date']} by `bench/run.sh` (median of {meta['runs']} runs, "
        f"{meta['load_seconds']} s per load test). Ratio = Berth over Distribution, oriented so that "
        "**> 1 means Berth is better** (for times, latencies, CPU and memory it is Distribution / Berth).",
        "",
        f"- machine: {meta['nproc']} cores, {meta['cpu']} ({meta['cpu_flags'].strip() or 'no sha_ni'}), "
        f"{meta['memory']} memory, {meta['kernel']}",
        f"- Distribution: `{meta['distribution']}`; client: `{meta['skopeo']}`, `{meta['wrk']}` (GET), "
        "`hey` (HEAD)",
        f"- Berth: commit `{meta['berth']}`, `berth-runner up` defaults"
        + (f" plus `{meta['berth_args']}`" if meta.get("berth_args") else ""),
        "",
        "| figure | Distribution | Berth | ratio |",
        "|---|--:|--:|--:|",
    ]
    md += [f"| {a} | {b} | {c} | {r} |" for a, b, c, r in table]
    md += ["", "<details><summary>every run</summary>", "", "| figure | registry | runs |", "|---|---|---|"]
    for (figure, registry), vs in sorted(values.items()):
        md.append(f"| {figure} | {registry} | {', '.join(f'{v:g}' for v in vs)} |")
    md += ["", "</details>", END]
    block = "\n".join(md)
    try:
        text = open(out).read()
    except FileNotFoundError:
        text = "# Benchmarks\n\n" + BEGIN + "\n" + END + "\n"
    if BEGIN in text and END in text:
        a, b = text.index(BEGIN), text.index(END) + len(END)
        text = text[:a] + block + text[b:]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    open(out, "w").write(text)
    print(f"written to {out}")


if __name__ == "__main__":
    main()
