"""Presenting a run: the table, the issue's targets checked against it, JSON and a log-log plot."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

Row = dict


def _key(row: Row) -> tuple:
    return row["mode"], row["len_k"], row["window"], row["dtype"]


def _find(rows: list[Row], method: str, mode: str, len_k: int, window: int,
          dtype: str = "float32") -> Row | None:
    for row in rows:
        if (row["method"], *_key(row)) == (method, mode, len_k, window, dtype) and row["seconds"]:
            return row
    return None


def speedup(rows: list[Row], row: Row) -> float | None:
    """How many times faster swaa_ext is than `row`'s method on the same case."""
    ours = _find(rows, "swaa_ext", *_key(row))
    return row["seconds"] / ours["seconds"] if ours and row["seconds"] else None


def print_table(rows: list[Row], info: dict, methods: list) -> None:
    labels = {m.name: m.label for m in methods}
    table = Table(title=f"sink + window attention, {info['cpu']}, {info['torch_threads']} threads "
                        f"(fp32 matmul peak {info['matmul_fp32_gflops']:.0f} GFLOP/s, "
                        f"{info['matmul_fp32_gflops_cpu_time']:.0f} by CPU time)")
    for col in ("mode", "Lq", "Lk", "window", "dtype", "method", "time ms", "GFLOP/s",
                "GFLOP/s (CPU time)", "swaa_ext speedup", "max |diff|"):
        table.add_column(col, justify="left" if col in ("mode", "method", "dtype") else "right")
    previous = None
    for row in rows:
        if previous is not None and _key(previous) != _key(row):
            table.add_section()
        previous = row
        cells = [row["mode"], str(row["len_q"]), str(row["len_k"]), str(row["window"]),
                 row["dtype"], labels[row["method"]]]
        if row["skipped"]:
            cells += [f"skipped ({row['skipped']})", "", "", "", ""]
        else:
            ratio = speedup(rows, row)
            diff = row["max_abs_diff"]
            cells += [f"{row['seconds'] * 1e3:.1f}", f"{row['gflops']:.1f}",
                      f"{row['gflops_cpu_time']:.1f}",
                      "" if row["method"] == "swaa_ext" or ratio is None else f"{ratio:.2f}x",
                      "" if diff is None else f"{diff:.1e}"]
        table.add_row(*cells)
    Console(width=200).print(table)


def targets(rows: list[Row], window: int) -> list[dict]:
    """Issue 3's targets, each with the measured value (None when the run did not cover it)."""
    def ratio(method: str, mode: str, n: int) -> float | None:
        row = _find(rows, method, mode, n, window)
        return speedup(rows, row) if row else None

    def time_of(mode: str, n: int, dtype: str = "float32") -> float | None:
        row = _find(rows, "swaa_ext", mode, n, window, dtype)
        return row["seconds"] if row else None

    def growth(mode: str) -> float | None:
        t16, t32 = time_of(mode, 16384), time_of(mode, 32768)
        return t32 / t16 if t16 and t32 else None

    checks = []
    for n in (8192, 16384, 32768):
        row = _find(rows, "swaa_ext", "fwd", n, window)
        checks.append((f"fwd GFLOP/s at L={n}", row["gflops"] if row else None, ">=", 100.0))
        checks.append((f"fwd GFLOP/s by CPU time (shared machine) at L={n}",
                       row["gflops_cpu_time"] if row else None, ">=", 100.0))
    checks += [
        ("fwd speedup vs compiled Flex, L=8192", ratio("flex_compiled", "fwd", 8192), ">=", 1.6),
        ("fwd speedup vs SDPA dense mask, L=8192", ratio("sdpa_dense_mask", "fwd", 8192), ">=", 6),
        ("fwd+bwd speedup vs SDPA dense mask, L=4096",
         ratio("sdpa_dense_mask", "fwd+bwd", 4096), ">=", 2.5),
        ("fwd+bwd speedup vs SDPA dense mask, L=16384",
         ratio("sdpa_dense_mask", "fwd+bwd", 16384), ">=", 8),
        ("fwd time(32k)/time(16k)", growth("fwd"), "<=", 2.15),
        ("fwd+bwd time(32k)/time(16k)", growth("fwd+bwd"), "<=", 2.15),
        ("decode speedup vs SDPA full cache, Lk=32768",
         ratio("sdpa_causal", "decode", 32768), ">=", 10),
    ]
    for mode in ("fwd", "fwd+bwd"):
        for n in sorted({r["len_k"] for r in rows if r["dtype"] == "bfloat16"}):
            t16, t32 = time_of(mode, n, "bfloat16"), time_of(mode, n)
            checks.append((f"{mode} bf16/fp32 time, L={n}", t16 / t32 if t16 and t32 else None,
                           "<=", 1.3))
    out = []
    for name, value, op, goal in checks:
        met = None if value is None else (value >= goal if op == ">=" else value <= goal)
        out.append({"target": f"{name} {op} {goal}", "value": value, "met": met})
    return out


def print_targets(checks: list[dict]) -> None:
    table = Table(title="Issue 3 targets")
    for col in ("target", "measured", "met"):
        table.add_column(col)
    for c in checks:
        value = "not measured" if c["value"] is None else f"{c['value']:.2f}"
        met = "" if c["met"] is None else ("yes" if c["met"] else "NO")
        table.add_row(c["target"], value, met)
    Console(width=200).print(table)


def write_json(run: dict, path: Path) -> None:
    path.write_text(json.dumps(run, indent=1, default=str) + "\n")


def plot(rows: list[Row], window: int, methods: list, path: Path) -> None:
    """Time vs length, log-log, one panel per mode, at the sweep's window, fp32."""
    modes = ("fwd", "fwd+bwd", "decode")
    fig, axes = plt.subplots(1, len(modes), figsize=(15, 4.5))
    for ax, mode in zip(axes, modes):
        lengths = set()
        for index, method in enumerate(methods):  # one colour per method in every panel
            pts = sorted((r["len_k"], r["seconds"]) for r in rows
                         if r["method"] == method.name and r["mode"] == mode and r["seconds"]
                         and r["window"] == window and r["dtype"] == "float32")
            lengths.update(n for n, _ in pts)
            if pts:
                ax.plot(*zip(*pts), marker="o", color=f"C{index}", label=method.label)
        ax.set(xscale="log", yscale="log", title=f"{mode} (window {window})",
               xlabel="cache length Lk" if mode == "decode" else "sequence length L",
               ylabel="seconds")
        ax.set_xticks(sorted(lengths), [f"{n // 1024}k" for n in sorted(lengths)])
        ax.minorticks_off()
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(run: dict, labels: dict[str, str]) -> str:
    """The run as Markdown: machine line, results table, targets table (for docs/performance.md)."""
    info, shape = run["machine"], run["shape"]
    lines = [
        f"Machine: {info['cpu']} ({info['cpu_capability']}), {info['logical_cpus']} logical CPUs, "
        f"{info['torch_threads']} torch threads, torch {info['torch']}; fp32 matmul peak "
        f"{info['matmul_fp32_gflops']:.0f} GFLOP/s ({info['matmul_fp32_gflops_cpu_time']:.0f} by "
        f"CPU time); load average (1/5/15 min) before "
        f"{'/'.join(f'{x:.1f}' for x in info['load_average_1_5_15'])}, after "
        f"{'/'.join(f'{x:.1f}' for x in info['load_average_after'])}. Shape: B={shape['batch']}, "
        f"{shape['heads_q']} query / {shape['heads_kv']} KV heads, D={shape['head_dim']}.",
        "",
        "| mode | Lq | Lk | window | dtype | method | time (ms) | GFLOP/s | GFLOP/s (CPU time) "
        "| swaa_ext speedup |",
        "|---|---:|---:|---:|---|---|---:|---:|---:|---:|",
    ]
    rows = run["results"]
    for row in rows:
        head = (f"| {row['mode']} | {row['len_q']} | {row['len_k']} | {row['window']} | "
                f"{row['dtype']} | {labels[row['method']]} |")
        if row["skipped"]:
            lines.append(f"{head} skipped ({row['skipped']}) | | | |")
            continue
        ratio = speedup(rows, row)
        ratio_cell = "" if row["method"] == "swaa_ext" or ratio is None else f"{ratio:.2f}x"
        lines.append(f"{head} {row['seconds'] * 1e3:.1f} | {row['gflops']:.1f} | "
                     f"{row['gflops_cpu_time']:.1f} | {ratio_cell} |")
    lines += ["", "| target | measured | met |", "|---|---:|---|"]
    for c in run["targets"]:
        value = "not measured" if c["value"] is None else f"{c['value']:.2f}"
        met = "" if c["met"] is None else ("yes" if c["met"] else "**no**")
        lines.append(f"| {c['target']} | {value} | {met} |")
    return "\n".join(lines) + "\n"
