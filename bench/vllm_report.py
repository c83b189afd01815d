"""bench/vllm.py's output: a table, JSON (with the settings and machine) and a bar chart of the
ratios against stock vLLM full attention."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from .report import write_json  # noqa: E402
from .timing import machine_info  # noqa: E402

BASE = "stock_full"
METRICS = (("prompt_tokens_per_s", "prompt tok/s"), ("generated_tokens_per_s", "gen tok/s"),
           ("kv_bytes_per_request", "KV MiB/request"), ("max_concurrency", "max concurrency"))


def ratios(rows: list[dict]) -> list[dict]:
    base = next((r for r in rows if r["config"] == BASE), None)
    for row in rows:
        row["vs_stock_full"] = {key: (row[key] / base[key] if base and base[key] else None)
                                for key, _ in METRICS}
    return rows


def report(rows: list[dict], args) -> None:
    rows = ratios(rows)
    settings = {k: getattr(args, k) for k in ("prompts", "prompt_len", "new_tokens", "window",
                                               "sinks", "max_model_len", "block_size",
                                               "max_num_batched_tokens", "quick")}
    settings["model"] = str(args.model)
    settings["dtype"] = "float32"
    table = Table(title=f"vLLM CPU, SmolLM2-135M, {args.prompts} prompts x {args.prompt_len} "
                        f"tokens + {args.new_tokens}, window {args.window}, {args.sinks} sinks")
    for col in ("config", *(label for _, label in METRICS), "KV groups"):
        table.add_column(col, justify="left" if col in ("config", "KV groups") else "right")
    for row in rows:
        cells = [row["config"]]
        for key, _ in METRICS:
            value = row[key] / 2**20 if key == "kv_bytes_per_request" else row[key]
            ratio = row["vs_stock_full"][key]
            cells.append(f"{value:.1f}" + ("" if ratio is None else f" ({ratio:.2f}x)"))
        cells.append(", ".join(f"{g['spec']}x{g['layers']}" for g in row["kv_groups"]))
        table.add_row(*cells)
    Console(width=200).print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json({"settings": settings, "machine": machine_info(), "results": rows},
               args.out.with_suffix(".json"))
    fig, axes = plt.subplots(1, len(METRICS), figsize=(16, 4))
    for ax, (key, label) in zip(axes, METRICS):
        values = [r["vs_stock_full"][key] or 0 for r in rows]
        ax.bar([r["config"] for r in rows], values, color=[f"C{i}" for i in range(len(rows))])
        ax.set(title=f"{label} / stock full", ylabel="ratio")
        ax.tick_params(axis="x", rotation=30, labelsize=7)
        ax.axhline(1.0, color="grey", lw=0.8)
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"), dpi=110)
    plt.close(fig)
    print(f"wrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.png')}")
