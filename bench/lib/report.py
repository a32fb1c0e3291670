#!/usr/bin/env python3
"""Turns the raw measurements of bench/compare.sh into its report.

Input (written by compare.sh into its run directory):
  meta.json     how the run was made (mode, rounds, duration, versions, gateway auth, ...)
  runs.jsonl    one line per measured run: round, workload, system, wrk's WRKJSON summary,
                CPU ticks of the system under test, its peak RSS, and CPU-0 ticks overall
  rss.json      optional: resident memory per system in the three scenarios of bench/rss.py
                (baseline, N idle keep-alive clients, N requests in flight, after they left)
  callgrind.json  optional (--callgrind): instructions per request of workload (a) per system

Output:
  <out>/<stamp>.json, <out>/latest.json   every run, the medians, the ratios, the targets
  <out>/latest.md                         the table
  <out>/latest.svg                        throughput and p99 per system and workload
  stdout                                  one line per system and workload, the ratios and
                                          the targets (what quick mode is read by)

Medians are taken over rounds for every metric but peak RSS, which is the maximum.
A run is flagged invalid when wrk saw any error (non-2xx/3xx status, connect, read, write,
timeout) on more than 0.1% of its requests, or made none: a proxy answering 401 fast is not
fast. Ratios are gateway/other: above 1 means more throughput for the gateway, but for p99
above 1 means the gateway is slower.
"""

import argparse
import json
import os
import shutil
import statistics
import sys

SYSTEMS = ["direct", "nginx", "haproxy", "gateway"]
COLORS = {"direct": "#8c8c8c", "nginx": "#2ca02c", "haproxy": "#1f77b4", "gateway": "#ff7f0e"}
WORKLOADS = {
    "a": "one hot JWT",
    "b": "distinct JWTs, gateway token cache off",
    "c": "API key",
    "d": "activate?initial=paused, 1 KiB body",
    "t": "workload a over TLS (ECDSA P-256), keep-alive",
    "h": "workload a over TLS, a new connection and handshake per request",
    "a2": "one hot JWT on two cores (gateway --workers 2, nginx worker_processes 2)",
}
SHORT = {"a": "hot JWT", "b": "distinct JWTs, no cache", "c": "API key", "d": "1 KiB POST",
         "t": "TLS keep-alive", "h": "TLS handshakes", "a2": "hot JWT, 2 cores"}
# Workloads whose every request is one new TLS connection: their req/s are handshakes/s.
HANDSHAKE_BOUND = {"h"}
ERROR_TOLERANCE = 0.001
# Above this share of the system-under-test CPU used by other processes, a run is noisy.
NOISE_PCT = 10.0


def load_runs(path):
    runs = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                runs.append(json.loads(line))
    return runs


def derive(run):
    """Per-run metrics from one raw record."""
    w = run["wrk"]
    requests = w["requests"]
    seconds = w["duration_us"] / 1e6 if w["duration_us"] else 0.0
    errors = sum(w["errors"].values())
    lat = w["latency_us"]
    out = {
        "rps": requests / seconds if seconds else 0.0,
        "p50_ms": lat["p50"] / 1000,
        "p99_ms": lat["p99"] / 1000,
        "p99_9_ms": lat["p99_9"] / 1000,
        "requests": requests,
        "errors": errors,
        "valid": requests > 0 and errors <= ERROR_TOLERANCE * requests,
        "cpu_s_per_1k": None,
        "peak_rss_mb": None,
        "cpu0_foreign_pct": None,
    }
    if run.get("cpu_ticks") is not None and requests:
        cpu_s = run["cpu_ticks"] / run["clk_tck"]
        out["cpu_s_per_1k"] = cpu_s / requests * 1000
    if run.get("rss_kb"):
        out["peak_rss_mb"] = run["rss_kb"] / 1024
    # Work done on the system-under-test CPU by anything else (other builds, the OS): the
    # best single indicator of how noisy a run was.
    busy, total = run.get("cpu0_busy_ticks"), run.get("cpu0_total_ticks")
    if busy is not None and total:
        foreign = busy - (run.get("cpu_ticks") or 0)
        out["cpu0_foreign_pct"] = max(0.0, 100.0 * foreign / total)
    return out


def summarize(runs):
    summary = {}
    for wl in sorted({r["workload"] for r in runs}):
        summary[wl] = {}
        for system in SYSTEMS:
            rows = [derive(r) for r in runs if r["workload"] == wl and r["system"] == system]
            if not rows:
                continue

            def med(key):
                values = [row[key] for row in rows if row[key] is not None]
                return statistics.median(values) if values else None

            rss = [row["peak_rss_mb"] for row in rows if row["peak_rss_mb"] is not None]
            summary[wl][system] = {
                "rounds": len(rows),
                "rps": med("rps"),
                "rps_each_round": [round(row["rps"], 1) for row in rows],
                "p50_ms": med("p50_ms"),
                "p99_ms": med("p99_ms"),
                "p99_9_ms": med("p99_9_ms"),
                "cpu_s_per_1k": med("cpu_s_per_1k"),
                "peak_rss_mb": max(rss) if rss else None,
                "errors": sum(row["errors"] for row in rows),
                "requests": sum(row["requests"] for row in rows),
                "valid": all(row["valid"] for row in rows),
                "cpu0_foreign_pct": med("cpu0_foreign_pct"),
            }
    return summary


def ratio(a, b):
    return a / b if a is not None and b else None


def ratios(summary):
    out = {}
    for wl, systems in summary.items():
        gw = systems.get("gateway")
        if not gw:
            continue
        entry = {}
        for other in ("haproxy", "nginx", "direct"):
            o = systems.get(other)
            if o:
                entry[f"gateway/{other}"] = {
                    "rps": ratio(gw["rps"], o["rps"]),
                    "p99": ratio(gw["p99_ms"], o["p99_ms"]),
                    "cpu_per_req": ratio(gw["cpu_s_per_1k"], o["cpu_s_per_1k"]),
                }
        out[wl] = entry
    return out


def targets(summary, rat, rss, auth_on):
    """Issue 12's targets (the same harness, the same run)."""
    def get(wl, pair, key):
        return rat.get(wl, {}).get(pair, {}).get(key)

    def scaling():
        one = summary.get("a", {}).get("gateway", {}).get("rps")
        two = summary.get("a2", {}).get("gateway", {}).get("rps")
        return ratio(two, one)

    gw = (rss or {}).get("gateway") or {}

    def mb(step):
        return (gw.get(step) or {}).get("rss_mb")

    checks = [
        ("(a) gateway throughput >= 1.0x nginx", get("a", "gateway/nginx", "rps"), ">=", 1.0),
        ("(a) gateway p99 <= nginx p99", get("a", "gateway/nginx", "p99"), "<=", 1.0),
        ("(c) gateway throughput >= 1.0x nginx", get("c", "gateway/nginx", "rps"), ">=", 1.0),
        ("(c) gateway throughput >= 2x HAProxy", get("c", "gateway/haproxy", "rps"), ">=", 2.0),
        ("(b) gateway throughput >= 1.5x HAProxy", get("b", "gateway/haproxy", "rps"), ">=", 1.5),
        ("(d) gateway throughput >= 0.9x nginx", get("d", "gateway/nginx", "rps"), ">=", 0.9),
        ("two cores: gateway --workers 2 >= 1.0x nginx (2 workers)",
         get("a2", "gateway/nginx", "rps"), ">=", 1.0),
        ("two cores: gateway >= 1.8x its own one-core figure", scaling(), ">=", 1.8),
        ("RSS with 1,000 idle keep-alive clients <= 24 MB", mb("idle"), "<=", 24.0),
        ("RSS with 1,000 requests in flight <= 48 MB", mb("in-flight"), "<=", 48.0),
        ("RSS after the clients left <= 1.1x the idle baseline",
         gw.get("after_vs_baseline"), "<=", 1.1),
    ]
    out = []
    for name, value, op, limit in checks:
        if value is None:
            status = "n/a"
        else:
            ok = value >= limit if op == ">=" else value <= limit
            status = "pass" if ok else "FAIL"
            if not auth_on:
                status += " (auth off: not a valid comparison)"
        out.append({"target": name, "value": value, "op": op, "limit": limit, "status": status})
    return out


def rss_lines(rss):
    """The memory table: one row per system, one column per scenario."""
    steps = ["baseline", "idle", "in-flight", "after"]
    out = ["| system | baseline MB | idle MB | in flight MB | after MB | after / baseline |",
           "|---|---:|---:|---:|---:|---:|"]
    for system, figures in rss.items():
        cells = [fmt((figures.get(step) or {}).get("rss_mb"), ".1f") for step in steps]
        out.append(f"| {system} | {' | '.join(cells)} "
                   f"| {fmt(figures.get('after_vs_baseline'), '.2f')} |")
    return out


def fmt(value, spec, missing="—"):
    return missing if value is None else format(value, spec)


def console(summary, rat, tg, rss, meta):
    lines = []
    for wl, systems in summary.items():
        for system, s in systems.items():
            flag = "" if s["valid"] else f"  INVALID: {s['errors']} errors"
            lines.append(
                f"{wl} {system:<8} {fmt(s['rps'], ',.0f'):>9} req/s  "
                f"p50 {fmt(s['p50_ms'], '.2f')} ms  p99 {fmt(s['p99_ms'], '.2f')} ms  "
                f"p99.9 {fmt(s['p99_9_ms'], '.2f')} ms  "
                f"cpu {fmt(us(s['cpu_s_per_1k']), '.1f')} us/req  "
                f"rss {fmt(s['peak_rss_mb'], '.1f')} MB  "
                f"cpu0-other {fmt(s['cpu0_foreign_pct'], '.0f')}%{flag}")
        if wl in HANDSHAKE_BOUND:
            for system, s in systems.items():
                lines.append(f"{wl} {system:<8} {fmt(s['rps'], ',.0f'):>9} TLS handshakes/s")
        for pair, r in rat.get(wl, {}).items():
            lines.append(f"{wl} ratio {pair:<16} throughput {fmt(r['rps'], '.2f')}x  "
                         f"p99 {fmt(r['p99'], '.2f')}x  cpu/req {fmt(r['cpu_per_req'], '.2f')}x")
    for system, figures in (rss or {}).items():
        lines.append(f"{system} RSS with {figures.get('connections')} clients: " + ", ".join(
            f"{step} {fmt((figures.get(step) or {}).get('rss_mb'), '.1f')} MB"
            for step in ("baseline", "idle", "in-flight", "after")))
    for t in tg:
        lines.append(f"target {t['status']:<5} {t['target']}: {fmt(t['value'], '.2f')} "
                     f"(needs {t['op']} {t['limit']})")
    warning = noise_warning(summary)
    if warning:
        lines.append(warning)
    if not meta.get("gateway_auth_on", True):
        lines.append("note: the gateway ran with [auth] mode = \"off\" (BENCH_GATEWAY_AUTH=off): "
                     "it did less work than HAProxy; ratios are not a valid comparison")
    return lines


def markdown(summary, rat, tg, rss, meta):
    m = meta
    out = [f"# pipeline-gateway vs HAProxy vs nginx vs direct — {m.get('mode', '?')} run", ""]
    if m.get("note"):
        out += [f"> **{m['note']}**", ""]
    if not m.get("gateway_auth_on", True):
        out += ["> **The gateway ran with `[auth] mode = \"off\"` (BENCH_GATEWAY_AUTH=off)**: it "
                "did no authentication, so its numbers and ratios validate the harness only.", ""]
    warning = noise_warning(summary)
    if warning:
        out += [f"> **{warning}.**", ""]
    out += [
        f"- started {m.get('started')}, commit `{m.get('commit')}`, host `{m.get('host')}` "
        f"({m.get('cpus')} CPUs, load average at start {m.get('loadavg')})",
        f"- {m.get('rounds')} round(s) × {m.get('duration')} s per run (after {m.get('warmup')} s "
        f"warm-up), {m.get('connections')} connections, wrk 1 thread on CPU {m.get('load_cpu')}; "
        f"system under test on CPU {m.get('sut_cpu')} with one worker; systems alternated "
        f"{' → '.join(m.get('systems', []))} within every round",
        f"- gateway: auth {'on' if m.get('gateway_auth_on', True) else 'OFF'}, rate limits "
        f"{'on' if m.get('gateway_rate_limit_on') else 'off'}, token-cache-off line for (b): "
        f"`{m.get('token_cache_off')}`",
        f"- versions: {m.get('versions')}",
        "",
        "Medians over rounds (peak RSS: maximum). CPU µs/req = CPU time (user+system, from "
        "/proc/PID/stat before and after the run) of the system under test divided by its "
        "requests: the figure the machine's noise moves least. `cpu0 other` = share of the system-under-test "
        "CPU used by other processes during the run (noise). ⚠ = wrk saw errors on > 0.1% "
        "of requests (e.g. 401s): that run does not count.",
        "",
    ]
    for wl, systems in summary.items():
        out += [f"## ({wl}) {WORKLOADS.get(wl, wl)}", "",
                "| system | req/s | p50 ms | p99 ms | p99.9 ms | CPU µs/req | peak RSS MB "
                "| cpu0 other | req/s each round |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        for system, s in systems.items():
            warn = "" if s["valid"] else f" ⚠ {s['errors']} errors"
            out.append(
                f"| {system}{warn} | {fmt(s['rps'], ',.0f')} | {fmt(s['p50_ms'], '.2f')} "
                f"| {fmt(s['p99_ms'], '.2f')} | {fmt(s['p99_9_ms'], '.2f')} "
                f"| {fmt(us(s['cpu_s_per_1k']), '.1f')} | {fmt(s['peak_rss_mb'], '.1f')} "
                f"| {fmt(s['cpu0_foreign_pct'], '.0f')}% "
                f"| {', '.join(format(x, ',.0f') for x in s['rps_each_round'])} |")
        if wl in HANDSHAKE_BOUND:
            out += ["", "TLS handshakes per second (one new connection per request): " + ", ".join(
                f"{system} {fmt(s['rps'], ',.0f')}" for system, s in systems.items()) + "."]
        if rat.get(wl):
            out += ["", "| ratio | throughput | p99 | CPU per request |", "|---|---:|---:|---:|"]
            for pair, r in rat[wl].items():
                out.append(f"| {pair} | {fmt(r['rps'], '.2f')}× | {fmt(r['p99'], '.2f')}× "
                           f"| {fmt(r['cpu_per_req'], '.2f')}× |")
        out.append("")
    if rss:
        n = next(iter(rss.values())).get("connections")
        out += ["## Memory (VmRSS) with many clients (bench/rss.py)", "",
                f"baseline: fresh, after a few requests; idle: {n} keep-alive clients that "
                f"each made one request; in flight: each of them with a request the (slow) "
                f"upstream holds; after: the clients gone.", ""]
        out += rss_lines(rss) + [""]
    if m.get("instructions_per_request"):
        out += ["## Instructions per request, workload (a), under callgrind", "",
                "| system | instructions / request |", "|---|---:|"]
        out += [f"| {system} | {count:,} |"
                for system, count in m["instructions_per_request"].items()]
        out.append("")
    out += ["## Targets (issue 12)", "", "| target | value | status |", "|---|---:|---|"]
    for t in tg:
        out.append(f"| {t['target']} | {fmt(t['value'], '.2f')} | {t['status']} |")
    out += ["", "![throughput and p99 per system](latest.svg)", ""]
    return "\n".join(out)


def svg(summary, meta):
    """Two panels of grouped bars: throughput, then p99, per workload and system."""
    workloads = list(summary)
    systems = [s for s in SYSTEMS if any(s in summary[w] for w in workloads)]
    width, panel_h, top, left = 960, 260, 70, 70
    group_w = (width - left - 20) / max(1, len(workloads))
    bar_w = min(40, (group_w - 30) / max(1, len(systems)))
    height = top + 2 * (panel_h + 70) + 10
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'font-family="sans-serif" font-size="11">',
             f'<rect width="{width}" height="{height}" fill="white"/>',
             f'<text x="{left}" y="22" font-size="15" font-weight="bold">pipeline-gateway vs '
             f'HAProxy vs nginx vs direct ({esc(meta.get("mode", ""))} run, medians)</text>']
    sub = []
    if meta.get("note"):
        sub.append(meta["note"])
    if not meta.get("gateway_auth_on", True):
        sub.append("gateway auth OFF: harness validation only")
    level = noise(summary)
    if level is not None and level > NOISE_PCT:
        sub.append(f"noisy machine: {level:.0f}% of the test CPU used by others")
    if sub:
        parts.append(f'<text x="{left}" y="40" fill="#b00">{esc(" — ".join(sub))}</text>')
    for i, s in enumerate(systems):
        x = left + i * 110
        parts.append(f'<rect x="{x}" y="48" width="12" height="12" fill="{COLORS[s]}"/>'
                     f'<text x="{x + 16}" y="58">{s}</text>')

    def panel(y0, key, title, scale_fmt, label):
        values = [summary[w][s][key] for w in workloads for s in systems
                  if s in summary[w] and summary[w][s][key] is not None]
        vmax = max(values) if values else 1.0
        vmax = vmax * 1.15 or 1.0
        base = y0 + panel_h
        parts.append(f'<text x="{left}" y="{y0 - 8}" font-size="13" font-weight="bold">'
                     f'{title}</text>')
        for k in range(5):
            v = vmax * k / 4
            y = base - panel_h * k / 4
            parts.append(f'<line x1="{left}" x2="{width - 20}" y1="{y:.1f}" y2="{y:.1f}" '
                         f'stroke="#ddd"/><text x="{left - 6}" y="{y + 4:.1f}" '
                         f'text-anchor="end">{format(v, scale_fmt)}</text>')
        for gi, w in enumerate(workloads):
            gx = left + gi * group_w + 15
            for si, s in enumerate(systems):
                row = summary[w].get(s)
                if not row or row[key] is None:
                    continue
                h = panel_h * row[key] / vmax
                x = gx + si * bar_w
                stroke = '' if row["valid"] else ' stroke="#d00" stroke-width="2"'
                parts.append(f'<rect x="{x:.1f}" y="{base - h:.1f}" width="{bar_w - 4:.1f}" '
                             f'height="{h:.1f}" fill="{COLORS[s]}"{stroke}/>')
                parts.append(f'<text x="{x + (bar_w - 4) / 2:.1f}" y="{base - h - 3:.1f}" '
                             f'text-anchor="middle" font-size="9">'
                             f'{label(row[key])}</text>')
            parts.append(f'<text x="{gx + len(systems) * bar_w / 2:.1f}" y="{base + 16}" '
                         f'text-anchor="middle">({w}) {esc(SHORT.get(w, w))}</text>')
        parts.append(f'<line x1="{left}" x2="{width - 20}" y1="{base}" y2="{base}" '
                     f'stroke="#333"/>')

    panel(top + 20, "rps", "Throughput (requests/s, higher is better)", ",.0f", compact)
    panel(top + panel_h + 110, "p99_ms", "p99 latency (ms, lower is better)", ".1f",
          lambda v: f"{v:.1f}" if v >= 10 else f"{v:.2f}")
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def us(cpu_s_per_1k):
    """CPU seconds per 1,000 requests as microseconds per request."""
    return None if cpu_s_per_1k is None else cpu_s_per_1k * 1000


def compact(value):
    if value >= 10_000:
        return f"{value / 1000:.0f}k"
    if value >= 1000:
        return f"{value / 1000:.1f}k"
    return f"{value:.0f}"


def noise(summary):
    """Mean share of the system-under-test CPU that other processes used, over all runs."""
    values = [s["cpu0_foreign_pct"] for systems in summary.values()
              for name, s in systems.items()
              if name != "direct" and s["cpu0_foreign_pct"] is not None]
    return sum(values) / len(values) if values else None


def noise_warning(summary):
    level = noise(summary)
    if level is None or level <= NOISE_PCT:
        return None
    return (f"NOISY: other processes used {level:.0f}% of the system-under-test CPU during the "
            f"runs (mean); these numbers measure the machine's load, not the systems")


def esc(text):
    return (str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--out", required=True, help="bench/results")
    parser.add_argument("--stamp", required=True)
    args = parser.parse_args()

    with open(os.path.join(args.run_dir, "meta.json"), encoding="utf-8") as f:
        meta = json.load(f)
    runs = load_runs(os.path.join(args.run_dir, "runs.jsonl"))
    rss_path = os.path.join(args.run_dir, "rss.json")
    rss = None
    if os.path.exists(rss_path):
        with open(rss_path, encoding="utf-8") as f:
            rss = json.load(f)
    callgrind_path = os.path.join(args.run_dir, "callgrind.json")
    if os.path.exists(callgrind_path):
        with open(callgrind_path, encoding="utf-8") as f:
            meta["instructions_per_request"] = json.load(f)

    summary = summarize(runs)
    rat = ratios(summary)
    tg = targets(summary, rat, rss, meta.get("gateway_auth_on", True))
    result = {"meta": meta, "summary": summary, "ratios": rat, "targets": tg,
              "rss": rss, "runs": runs}

    os.makedirs(args.out, exist_ok=True)
    stamped = os.path.join(args.out, f"{args.stamp}.json")
    with open(stamped, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    shutil.copyfile(stamped, os.path.join(args.out, "latest.json"))
    with open(os.path.join(args.out, "latest.md"), "w", encoding="utf-8") as f:
        f.write(markdown(summary, rat, tg, rss, meta))
    with open(os.path.join(args.out, "latest.svg"), "w", encoding="utf-8") as f:
        f.write(svg(summary, meta))

    print("\n".join(console(summary, rat, tg, rss, meta)))
    failed = any(t["status"] == "FAIL" for t in tg)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
