#!/usr/bin/env python3
"""Turns criterion's output into the results table of docs/PERFORMANCE.md and the scaling
plot docs/bench-scaling.svg (Python 3.11, standard library only).

Reads target/criterion/<group>/<function>/<value>/new/{benchmark,estimates}.json (criterion's
mean of each bench), pairs every engine bench with its floor and its SQLite baseline of the
same group and size, and prints a markdown table: operation, size, project, floor, SQLite,
project / floor, SQLite / project, when each was measured; above it the machine the script
runs on (run it on the machine that ran the benches) and the dates of the results.

    python3 benches/report.py            # print the table to stdout
    python3 benches/report.py --write    # also replace the section of docs/PERFORMANCE.md
                                         # between <!-- bench table --> and
                                         # <!-- end bench table -->, and write
                                         # docs/bench-scaling.svg

Only the benches named in ROWS are read; a missing bench shows as "–", and "n/a" marks the
SQLite column of operations SQLite has no part in (decoding and verifying webhooks). Each
row's date is that of its project result, so a stale row (an old run, or a quick-mode size)
shows.
"""

from __future__ import annotations

import argparse
import datetime as dt
import html
import json
import math
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BEGIN = "<!-- bench table -->"
END = "<!-- end bench table -->"

# Each row kind: (group, label, project function, floor function, SQLite function, unit).
# For groups whose value is "<case>_<size>msgs" the case goes into the label.
# `per` divides by the bench's element throughput (a time per message instead of per batch).
# `sqlite=NA`: SQLite has no meaning for the operation (the SQLite column and its ratio say
# "n/a"). `needs_sqlite`: only the sizes that have a SQLite result get a row.
NA = "n/a"
APPEND_SQLITE = "INSERT per transaction, WAL, synchronous=FULL, a connection per thread"
ROWS = [
    dict(group="apply_sent", label="apply a sent message (per message)",
         project="inbox_apply_event", floor="floor_btreemap_vec", sqlite="sqlite_insert",
         per=True, floor_name="`BTreeMap<_, Vec<Message>>`",
         sqlite_name="INSERT, one transaction, in memory"),
    dict(group="page", label="page of 30, {case}",
         project="inbox_list_messages", floor="floor_sorted_vec", sqlite="sqlite_select",
         floor_name="sorted `Vec`", sqlite_name="SELECT ... LIMIT 30, in memory"),
    dict(group="page_by_size", label="page of 30, desc, cursor in the middle",
         project="inbox_list_messages", floor="floor_sorted_vec", sqlite="sqlite_select",
         floor_name="sorted `Vec`", sqlite_name="SELECT ... LIMIT 30, in memory"),
    dict(group="merge_interleaved", label="merge, interleaved, engine unshared",
         project="inbox_apply_merged_unshared", floor="floor_vec_keys", sqlite="sqlite_update",
         floor_name="`Vec` merge of the keys", sqlite_name="UPDATE, in memory"),
    dict(group="merge_interleaved", label="merge, interleaved, engine shared (snapshot)",
         project="inbox_apply_merged", floor="floor_vec_keys", sqlite="sqlite_update",
         floor_name="`Vec` merge of the keys", sqlite_name="UPDATE, in memory"),
    dict(group="merge_precedes", label="merge, one precedes the other, engine unshared",
         project="inbox_apply_merged_unshared", floor="floor_vec_keys", sqlite="sqlite_update",
         floor_name="`Vec` merge of the keys", sqlite_name="UPDATE, in memory"),
    dict(group="merge_precedes", label="merge, one precedes the other, engine shared",
         project="inbox_apply_merged", floor="floor_vec_keys", sqlite="sqlite_update",
         floor_name="`Vec` merge of the keys", sqlite_name="UPDATE, in memory"),
    dict(group="merge_interleaved", label="merge on disk, interleaved, engine unshared",
         project="inbox_apply_merged_unshared", floor="floor_vec_keys",
         sqlite="sqlite_update_wal_file", needs_sqlite=True,
         floor_name="`Vec` merge of the keys",
         sqlite_name="UPDATE, WAL file, synchronous=FULL (the engine in memory)"),
    dict(group="merge_precedes", label="merge on disk, one precedes the other, engine unshared",
         project="inbox_apply_merged_unshared", floor="floor_vec_keys",
         sqlite="sqlite_update_wal_file", needs_sqlite=True,
         floor_name="`Vec` merge of the keys",
         sqlite_name="UPDATE, WAL file, synchronous=FULL (the engine in memory)"),
    dict(group="append", label="durable append, one event, 1 thread",
         project=("filelog_fsync", "1_appenders"),
         floor=("floor_write_all_sync_data", "1_thread"),
         sqlite=("sqlite_wal_full", "1_thread"), per=True, size="one event per append",
         floor_name="`write_all` + `sync_data`", sqlite_name=APPEND_SQLITE),
    dict(group="append", label="durable append, one event, 8 threads (group commit)",
         project=("filelog_fsync", "8_appenders"),
         floor=("floor_write_all_sync_data", "1_thread"),
         sqlite=("sqlite_wal_full", "8_threads"), per=True,
         size="per event; floor from 1 thread",
         floor_name="`write_all` + `sync_data`", sqlite_name=APPEND_SQLITE),
    dict(group="append", label="durable append, one event, 64 threads (group commit)",
         project=("filelog_fsync", "64_appenders"),
         floor=("floor_write_all_sync_data", "1_thread"),
         sqlite=("sqlite_wal_full", "64_threads"), per=True,
         size="per event; floor from 1 thread",
         floor_name="`write_all` + `sync_data`", sqlite_name=APPEND_SQLITE),
    dict(group="replay", label="replay the log into memory",
         project="recover_into_inbox", floor="floor_decode_only", sqlite="sqlite_read_all",
         floor_name="decode only", sqlite_name="open + SELECT every row, WAL file"),
    dict(group="startup", label="start-up (snapshot + tail)",
         project="open_and_recover", floor=None, sqlite="sqlite_open_first_page",
         floor_name="–", sqlite_name="open + first page, WAL file"),
    dict(group="webhook", label="webhook: verify (RS256) and decode one delivery",
         project="inbox_verify_decode", floor="floor_rs256_json_value", sqlite=NA,
         floor_name="the RS256 check alone + every layer into `serde_json::Value`",
         sqlite_name="n/a (no database in decoding)"),
    dict(group="webhook", label="webhook: decode only (no signature)",
         project="inbox_decode_only", floor="floor_json_value", sqlite=NA,
         floor_name="every layer into `serde_json::Value`",
         sqlite_name="n/a (no database in decoding)"),
    dict(group="webhook_ingest", label="webhook: replica dedupes and applies a new delivery",
         project="replica_ingest_new", floor="floor_btreeset_btreemap_vec", sqlite=NA,
         per=True, floor_name="`BTreeSet` insert of the id + `BTreeMap<_, Vec<Message>>` push",
         sqlite_name="n/a (no database in decoding)"),
    dict(group="webhook_ingest", label="webhook: replica drops a repeated delivery",
         project="replica_ingest_duplicate", floor="floor_btreeset_contains", sqlite=NA,
         per=True, floor_name="`BTreeSet::contains` of the id",
         sqlite_name="n/a (no database in decoding)"),
    dict(group="server", label="inboxd: durable Send Message over loopback HTTP (per request)",
         project="inboxd_send_message", floor="floor_http_json",
         sqlite="sqlite_insert_per_request", per=True,
         floor_name="the same HTTP + JSON, nothing stored",
         sqlite_name="axum handler: INSERT per request, WAL, synchronous=FULL"),
    dict(group="append_postgres", label="durable append to PostgreSQL, one process (per event)",
         project=("postgres_1_process", "64_appenders"),
         floor=("floor_insert_autocommit", "64_connections"), sqlite=NA, per=True,
         size="64 appenders",
         floor_name="64 connections, one autocommit `INSERT` each, no ordering",
         sqlite_name="n/a (a file database is not shared by processes; see the append rows)"),
    dict(group="append_postgres", label="durable append to PostgreSQL, two processes (per event)",
         project=("postgres_2_processes", "64_appenders"),
         floor=("floor_insert_autocommit", "64_connections"), sqlite=NA, per=True,
         size="64 appenders",
         floor_name="64 connections, one autocommit `INSERT` each, no ordering",
         sqlite_name="n/a (a file database is not shared by processes; see the append rows)"),
]


def load(criterion: Path) -> dict[tuple[str, str, str], dict]:
    """(group, function, value) -> {"ns": mean, "elements": n or None, "mtime": datetime}."""
    out = {}
    for bench in criterion.glob("**/new/benchmark.json"):
        est = bench.with_name("estimates.json")
        if not est.exists():
            continue
        try:
            b = json.loads(bench.read_text())
            e = json.loads(est.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        thr = b.get("throughput") or {}
        elements = thr.get("Elements")
        if elements is None and "ElementsAndBytes" in thr:
            elements = thr["ElementsAndBytes"].get("elements")
        key = (b["group_id"], b["function_id"], b.get("value_str") or "")
        out[key] = {
            "ns": e["mean"]["point_estimate"],
            "elements": elements,
            "mtime": dt.datetime.fromtimestamp(est.stat().st_mtime, dt.timezone.utc),
        }
    return out


POW = re.compile(r"10\^(\d+)")


def split_value(value: str) -> tuple[str, str]:
    """A bench's value as (case, size): 'desc_middle_10^6msgs' -> ('desc_middle', '10^6');
    '10^5' -> ('', '10^5'); '10^6msgs_10^4convs' -> ('', '10^6 over 10^4 conversations');
    '10^3_into_10^4' -> ('', '10^3 into a replica of 10^4; per delivery'); anything else -> ('', the value with spaces for underscores)."""
    if POW.fullmatch(value):
        return ("", value)
    m = re.fullmatch(r"(.*)_(10\^\d+)msgs", value)
    if m:
        return (m.group(1), m.group(2))
    m = re.fullmatch(r"(10\^\d+)msgs_(10\^\d+)convs", value)
    if m:
        return ("", f"{m.group(1)} over {m.group(2)} conversations")
    m = re.fullmatch(r"(10\^\d+)_into_(10\^\d+)", value)
    if m:
        return ("", f"{m.group(1)} into a replica of {m.group(2)}; per delivery")
    return ("", value.replace("_", " "))


DEPTH = {"start": 0, "end": 0, "middle": 1, "deepest": 2}


def order_key(value: str) -> tuple:
    """Sorts page cases by depth, then order; sizes numerically."""
    case, size = split_value(value)
    parts = case.split("_")
    depth = DEPTH.get(parts[-1], 9) if case else 0
    return (depth, case, size_number(size.split(" ")[0]))


def size_number(size: str) -> float:
    m = POW.fullmatch(size)
    if m:
        return 10.0 ** int(m.group(1))
    try:
        return float(size)
    except ValueError:
        return math.inf


def fmt_time(ns: float | None) -> str:
    if ns is None:
        return "–"
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns:.3g} ns"


def fmt_ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "–"
    r = a / b
    if r >= 10:
        return f"{r:,.0f}x"
    if r >= 1:
        return f"{r:.1f}x"
    return f"{r:.2g}x"


def machine() -> str:
    model = "unknown CPU"
    cpus = os.cpu_count() or 0
    mem = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                kib = int(line.split()[1])
                mem = f", {kib / 2**20:.0f} GiB"
                break
    except OSError:
        pass
    try:
        rustc = subprocess.run(["rustc", "-V"], capture_output=True, text=True,
                               check=False).stdout.strip()
    except OSError:
        rustc = ""
    return (f"{cpus} CPUs `{model}`{mem}, {platform.system()} {platform.release()}"
            + (f", {rustc}" if rustc else ""))


def pick(results, group: str, spec, value: str | None):
    """The result of `spec` (a function name, or (function, fixed value)) in `group`."""
    if spec is None or spec == NA:
        return None
    if isinstance(spec, tuple):
        fn, value = spec
    else:
        fn = spec
    return results.get((group, fn, value))


def per(r, divide: bool) -> float | None:
    if r is None:
        return None
    if divide and r["elements"]:
        return r["ns"] / r["elements"]
    return r["ns"]


def table_rows(results):
    rows = []
    for kind in ROWS:
        group = kind["group"]
        project = kind["project"]
        if isinstance(project, tuple):
            values = [project[1]] if (group, *project) in results else []
        else:
            values = sorted(
                {v for (g, f, v) in results if g == group and f == project},
                key=order_key,
            )
        for value in values:
            case, size = split_value(value)
            p = pick(results, group, project, value)
            fl = pick(results, group, kind["floor"], value)
            sq = pick(results, group, kind["sqlite"], value)
            if kind.get("needs_sqlite") and sq is None:
                continue
            divide = kind.get("per", False)
            rows.append({
                "group": group,
                "label": kind["label"].format(case=case.replace("_", " ")),
                "size": kind.get("size", size),
                "project": per(p, divide),
                "floor": per(fl, divide),
                "sqlite": per(sq, divide),
                "floor_name": kind["floor_name"],
                "sqlite_name": kind["sqlite_name"],
                "when": p["mtime"] if p else None,
                "kind": kind,
                "value": value,
            })
    return rows


def markdown(rows, results) -> str:
    used = [r["when"] for r in rows if r["when"]]
    lines = []
    lines.append(f"Generated by `python3 benches/report.py --write` from `target/criterion`.")
    lines.append("")
    lines.append(f"- machine: {machine()}")
    if used:
        lo, hi = min(used), max(used)
        lines.append(f"- results dated {lo:%Y-%m-%d %H:%M} to {hi:%Y-%m-%d %H:%M} UTC "
                     "(criterion's mean; each row's date is its project result's)")
    lines.append("- ratios: project / floor is what the project costs over the floor (1x: as "
                 "fast as the plain model); SQLite / project is how many times faster the "
                 "project is than SQLite (below 1x: slower)")
    lines.append("")
    lines.append("| operation | size | project | floor | SQLite | project / floor "
                 "| SQLite / project | measured (UTC) |")
    lines.append("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        when = f"{r['when']:%m-%d %H:%M}" if r["when"] else "–"
        na = r["kind"]["sqlite"] == NA
        sqlite = NA if na else fmt_time(r["sqlite"])
        sqlite_ratio = NA if na else fmt_ratio(r["sqlite"], r["project"])
        lines.append(
            f"| {r['label']} | {r['size']} | {fmt_time(r['project'])} | {fmt_time(r['floor'])} "
            f"| {sqlite} | {fmt_ratio(r['project'], r['floor'])} "
            f"| {sqlite_ratio} | {when} |")
    lines.append("")
    lines.append("The baselines of each operation:")
    lines.append("")
    seen = set()
    for r in rows:
        k = r["kind"]
        key = (k["label"].split(",")[0], k["floor_name"], k["sqlite_name"])
        if key in seen:
            continue
        seen.add(key)
        lines.append(f"- {key[0]}: floor {k['floor_name']}; SQLite {k['sqlite_name']}")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------
# The plot

COLORS = {"project": "#1f77b4", "floor": "#2ca02c", "sqlite": "#d62728"}


def series(results, group: str, fn: str) -> list[tuple[float, float]]:
    pts = []
    for (g, f, v), r in results.items():
        if g == group and f == fn:
            case, size = split_value(v)
            n = size_number(size)
            if not case and math.isfinite(n):
                pts.append((n, r["ns"]))
    return sorted(pts)


def panel(results, x0: float, y0: float, w: float, h: float, title: str, group: str,
          lines: list[tuple[str, str, str, bool]]) -> list[str]:
    """One log-log panel at (x0, y0) of size w x h. lines: (function, legend, color key,
    dashed)."""
    data = [(series(results, group, fn), legend, COLORS[color], dashed)
            for fn, legend, color, dashed in lines]
    data = [d for d in data if d[0]]
    out = [f'<text x="{x0 + w / 2:.1f}" y="{y0 - 12:.1f}" text-anchor="middle" '
           f'font-size="15" font-weight="bold">{title}</text>']
    if not data:
        out.append(f'<text x="{x0 + w / 2:.1f}" y="{y0 + h / 2:.1f}" text-anchor="middle">'
                   "no results</text>")
        return out
    xs = [p[0] for d in data for p in d[0]]
    ys = [p[1] for d in data for p in d[0]]
    xlo, xhi = math.floor(math.log10(min(xs))), math.ceil(math.log10(max(xs)))
    ylo, yhi = math.floor(math.log10(min(ys))), math.ceil(math.log10(max(ys)))
    if xhi == xlo:
        xhi += 1
    if yhi == ylo:
        yhi += 1

    def px(x: float) -> float:
        return x0 + (math.log10(x) - xlo) / (xhi - xlo) * w

    def py(y: float) -> float:
        return y0 + h - (math.log10(y) - ylo) / (yhi - ylo) * h

    out.append(f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" '
               'stroke="#444"/>')
    for e in range(xlo, xhi + 1):
        x = px(10.0 ** e)
        out.append(f'<line x1="{x:.1f}" y1="{y0}" x2="{x:.1f}" y2="{y0 + h}" '
                   'stroke="#ddd"/>')
        out.append(f'<text x="{x:.1f}" y="{y0 + h + 18}" text-anchor="middle" '
                   f'font-size="12">10<tspan baseline-shift="super" font-size="9">{e}'
                   "</tspan></text>")
    for e in range(ylo, yhi + 1):
        y = py(10.0 ** e)
        out.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + w}" y2="{y:.1f}" '
                   'stroke="#ddd"/>')
        out.append(f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end" '
                   f'font-size="12">{fmt_time(10.0 ** e)}</text>')
    out.append(f'<text x="{x0 + w / 2:.1f}" y="{y0 + h + 40}" text-anchor="middle" '
               'font-size="13">messages per conversation (n)</text>')
    out.append(f'<text transform="translate({x0 - 62},{y0 + h / 2:.1f}) rotate(-90)" '
               'text-anchor="middle" font-size="13">time (criterion mean)</text>')
    for i, (pts, legend, color, dashed) in enumerate(data):
        coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        dash = ' stroke-dasharray="6 4"' if dashed else ""
        out.append(f'<polyline points="{coords}" fill="none" stroke="{color}" '
                   f'stroke-width="2"{dash}/>')
        for x, y in pts:
            out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{color}">'
                       f"<title>{legend}, n = {x:.0f}: {fmt_time(y)}</title></circle>")
        # The legend, under the panel.
        ly = y0 + h + 66 + i * 18
        out.append(f'<line x1="{x0 + 10}" y1="{ly - 4}" x2="{x0 + 34}" y2="{ly - 4}" '
                   f'stroke="{color}" stroke-width="2"{dash}/>')
        out.append(f'<text x="{x0 + 40}" y="{ly}" font-size="12">{legend}</text>')
    return out


def svg(results) -> str:
    w, h = 380, 300
    width, height = 2 * w + 220, h + 210
    body = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
    ]
    merge_lines = [
        ("inbox_apply_merged_unshared", "project (unshared)", "project", False),
        ("inbox_apply_merged", "project (shared)", "project", True),
        ("floor_vec_keys", "floor (Vec merge of keys)", "floor", False),
        ("sqlite_update", "SQLite (UPDATE)", "sqlite", False),
    ]
    page_lines = [
        ("inbox_list_messages", "project", "project", False),
        ("floor_sorted_vec", "floor (sorted Vec)", "floor", False),
        ("sqlite_select", "SQLite (SELECT ... LIMIT 30)", "sqlite", False),
    ]
    body += panel(results, 80, 40, w, h, "merge two interleaved conversations of n each",
                  "merge_interleaved", merge_lines)
    body += panel(results, 80 + w + 110, 40, w, h, "one page of 30 at depth n/2",
                  "page_by_size", page_lines)
    plotted = {("merge_interleaved", f) for f, *_ in merge_lines}
    plotted |= {("page_by_size", f) for f, *_ in page_lines}
    dates = [r["mtime"] for (g, f, _), r in results.items() if (g, f) in plotted]
    when = (f"{min(dates):%Y-%m-%d %H:%M}–{max(dates):%H:%M} UTC" if dates else "")
    footer = f"log-log; criterion means; {when}; {machine().replace('`', '')}"
    body.append(f'<text x="{width / 2:.0f}" y="{height - 10}" text-anchor="middle" '
                f'font-size="11" fill="#555">{html.escape(footer)}</text>')
    body.append("</svg>")
    return "\n".join(body) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--criterion", type=Path, default=ROOT / "target" / "criterion",
                    help="criterion's output directory (default: target/criterion)")
    ap.add_argument("--write", action="store_true",
                    help="write the table into docs/PERFORMANCE.md and the SVG into docs/")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "PERFORMANCE.md")
    ap.add_argument("--svg", type=Path, default=ROOT / "docs" / "bench-scaling.svg")
    args = ap.parse_args()

    results = load(args.criterion)
    if not results:
        print(f"no criterion results under {args.criterion}", file=sys.stderr)
        return 1
    table = markdown(table_rows(results), results)
    sys.stdout.write(table)
    if args.write:
        doc = args.doc.read_text()
        start, end = doc.find(BEGIN), doc.find(END)
        if start < 0 or end < start:
            print(f"{args.doc}: markers {BEGIN} ... {END} not found", file=sys.stderr)
            return 1
        doc = doc[: start + len(BEGIN)] + "\n" + table + doc[end:]
        args.doc.write_text(doc)
        args.svg.write_text(svg(results))
        print(f"wrote {args.doc} and {args.svg}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
