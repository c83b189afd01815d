"""Grid recipes, aggregation (accuracy, intervals, paired speed-ups) and the report writers."""

from __future__ import annotations

import json

import matplotlib.image
import pytest

from swaa_ext import PRESETS
from swaa_ext.recipes.grid import FULL_WINDOW, build_grid, describe, parse_recipe
from swaa_ext.recipes.report import main as report_main
from swaa_ext.recipes.report import markdown, paired, plot, summarize, write_json
from swaa_ext.recipes.scoring import mcnemar_exact
from swaa_ext.recipes.runner import Record


def test_recipe_grammar():
    e = parse_recipe("swa+sinks+fa_decode+odd", 0.25, default_sinks=16)
    assert (e.sinks, e.full_attention_layers, e.fa_decode, e.adapted) == (16, "odd", True, True)
    cfg = e.swaa_config(1000)
    assert (cfg.window, cfg.sinks, cfg.full_attention_layers, cfg.fa_decode) == (250, 16, "odd", True)
    assert parse_recipe("swa+sinks7", 0.5, 16).sinks == 7
    assert parse_recipe("swa", 0.001, 0).swaa_config(100).window == 1  # never below one key
    assert parse_recipe("fa", 0.5, 0).swaa_config(1000) is None
    assert parse_recipe("fa_kernel", 0.5, 0).swaa_config(1000).window == FULL_WINDOW


def test_preset_recipe_takes_the_grid_window():
    name = "swa_sinks_fa_decode_half"
    e = parse_recipe(f"preset:{name}", 0.125, 0)
    cfg, want = e.swaa_config(2048), PRESETS[name][1]
    assert cfg.window == 256
    assert (cfg.sinks, cfg.full_attention_layers, cfg.fa_decode) == \
        (want.sinks, want.full_attention_layers, want.fa_decode)


def test_explicit_layer_list_recipe():
    """A calibrated choice (recipes/select.py) names its layers: layers:<i>.<j>..."""
    from swaa_ext.recipes.grid import layers_token

    recipe = "swa+sinks+fa_decode+" + layers_token([14, 4, 7])
    assert recipe.endswith("layers:4.7.14")
    cfg = parse_recipe(recipe, 0.125, 64).swaa_config(2048)
    assert (cfg.full_attention_layers, cfg.sinks, cfg.fa_decode, cfg.window) == \
        ((4, 7, 14), 64, True, 256)
    for bad in ("swa+layers:", "swa+layers:4,7", "swa+layers:4.x", "swa+layers:-1"):
        with pytest.raises(ValueError, match="layer indices joined by '.'"):
            parse_recipe(bad, 0.25, 0)
    with pytest.raises(ValueError, match="duplicates"):
        parse_recipe("swa+layers:3.3", 0.25, 0).swaa_config(100)


@pytest.mark.parametrize("bad", ["sinks", "swa+odd+bogus", "preset:nope", ""])
def test_bad_recipes(bad):
    with pytest.raises(ValueError):
        parse_recipe(bad, 0.25, 0)


def test_grid_runs_windowed_recipes_per_fraction_and_fa_once():
    grid = build_grid(["fa", "swa", "fa_kernel"], [0.25, 0.5], 0)
    assert [e.name for e in grid] == ["fa", "swa@0.25", "swa@0.5", "fa_kernel"]


def _record(config: str, index: int, correct: bool, prefill: float, length: int = 1000,
            depth: float = 0.5) -> Record:
    return Record(config, "passkey", index, length, length, depth, ["12345"],
                  ["12345"] if correct else [], correct, " 12345", None, prefill, 0.3, 4, 1 << 20,
                  2 << 20, well_formed=correct)


def _fixture():
    grid = build_grid(["fa", "fa_kernel", "swa"], [0.25], 0)
    records = []
    for i in range(4):
        depth = [0.1, 0.9][i % 2]
        records.append(_record("fa", i, True, 2.0 * (i + 1), depth=depth))
        records.append(_record("fa_kernel", i, True, 1.6 * (i + 1), depth=depth))
        records.append(_record("swa@0.25", i, i == 0, 1.0 * (i + 1), depth=depth))
    return grid, records


def test_summary_accuracy_intervals_and_paired_speedups():
    grid, records = _fixture()
    rows = {r["name"]: r for r in summarize(records, [describe(e) for e in grid])}
    swa = rows["swa@0.25"]
    assert (swa["correct"], swa["n"], swa["accuracy"]) == (1, 4, 0.25)
    assert swa["ci95"] == pytest.approx([0.0456, 0.6994], abs=1e-4)  # Wilson 1/4
    # Every sample: fa takes 2x and fa_kernel 1.6x as long as swa.
    assert swa["prefill_speedup"]["fa"] == pytest.approx(2.0)
    assert swa["prefill_speedup"]["fa_kernel"] == pytest.approx(1.6)
    assert rows["fa"]["prefill_speedup"]["fa"] == pytest.approx(1.0)
    assert swa["by_depth"]["0.1"]["correct"] == 1 and swa["by_depth"]["0.9"]["correct"] == 0
    assert swa["prefill_s_median"] == pytest.approx(2.5)
    assert swa["decode_s_per_token"] == pytest.approx(0.3 * 4 / (3 * 4))


def _written(path):
    """The fixture's records, summary and meta, written to `path` as an evaluation writes them."""
    grid, records = _fixture()
    summary = summarize(records, [describe(e) for e in grid])
    meta = {"model": "m", "tasks": ["passkey"], "samples": 4, "seed": 0, "device": "cpu",
            "threads": 2}
    write_json(path, meta, summary, records)
    return grid, records, summary, meta


def test_writers_produce_valid_json_markdown_and_png(tmp_path):
    grid, records, summary, meta = _written(tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert len(data["records"]) == 12 and [r["name"] for r in data["summary"]] == \
        ["fa", "fa_kernel", "swa@0.25"]
    table = markdown(meta, summary)
    main_rows = [line for line in table.splitlines() if line.startswith("| swa@0.25 |")]
    assert len(main_rows) == 4  # main table + by task, length and depth
    assert main_rows[0].count("|") == 14  # 13 columns
    assert "0.25 [0.05, 0.70] (1/4) | 0.25 |" in main_rows[0] and "2.00×" in main_rows[0]
    plot(tmp_path / "p.png", summary, "title")
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(tmp_path / "p.png")
    assert image.shape[0] > 100 and image.shape[1] > 100


def test_paired_comparisons_count_the_discordant_prompts():
    grid, records = _fixture()
    # fa_kernel misses prompts 1 and 2 too; swa@0.25 is right only on prompt 0.
    records = [r for r in records if not (r.config == "fa_kernel" and r.index in (1, 2))]
    records += [_record("fa_kernel", 1, False, 3.2), _record("fa_kernel", 2, False, 4.8)]
    rows = {(p["first"], p["second"]): p for p in paired(records, [e.name for e in grid])}
    assert list(rows) == [("fa", "fa_kernel"), ("fa", "swa@0.25"), ("fa_kernel", "swa@0.25")]
    fa_swa = rows[("fa", "swa@0.25")]
    assert (fa_swa["prompts"], fa_swa["only_first"], fa_swa["only_second"]) == (4, 3, 0)
    assert fa_swa["p_mcnemar"] == pytest.approx(2 / 8)
    kernel_swa = rows[("fa_kernel", "swa@0.25")]
    assert (kernel_swa["only_first"], kernel_swa["only_second"]) == (1, 0)
    assert rows[("fa", "fa_kernel")]["only_first"] == 2
    # Pairs are by prompt: a prompt only one configuration ran is not counted.
    extra = paired(records + [_record("swa@0.25", 9, True, 1.0)], ["fa", "swa@0.25"])
    assert extra[0]["prompts"] == 4 and extra[0]["only_second"] == 0


def test_mcnemar_exact_two_sided_binomial():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(0, 6) == pytest.approx(2 / 64)
    assert mcnemar_exact(9, 1) == pytest.approx(2 * 11 / 1024)
    assert mcnemar_exact(5, 5) == 1.0
    with pytest.raises(ValueError, match="discordant counts"):
        mcnemar_exact(-1, 2)


def test_rerender_rebuilds_the_report_from_the_records(tmp_path, capsys):
    grid, records, summary, meta = _written(tmp_path / "results.json")
    written = json.loads((tmp_path / "results.json").read_text())
    del written["paired"]  # as results written before the paired table existed
    (tmp_path / "results.json").write_text(json.dumps(written))
    assert report_main([str(tmp_path)]) == 0
    again = json.loads((tmp_path / "results.json").read_text())
    assert again["summary"] == json.loads(json.dumps(summary))
    assert again["paired"] == paired(records, [e.name for e in grid])
    table = (tmp_path / "results.md").read_text()
    assert table == markdown(meta, summary, again["paired"]) and "exact McNemar" in table
    assert "| fa | swa@0.25 | 4 | 3 | 0 | 0.25 |" in table
    assert capsys.readouterr().out.strip() == table.strip()
    with pytest.raises(SystemExit, match="results.json not found"):
        report_main([str(tmp_path / "nope")])


def test_an_evaluation_of_the_same_prompts_adds_its_configurations(tmp_path):
    """`report DIR --add MORE`: MORE's configurations join DIR's as if run in one grid."""
    grid, records = _fixture()
    everything = summarize(records, [describe(e) for e in grid])
    meta = {"model": "m", "tasks": ["passkey"], "samples": 4, "seed": 0, "lengths": [1000],
            "command": "first"}
    for name, configs in (("first", ["fa", "fa_kernel"]), ("more", ["swa@0.25"])):
        (tmp_path / name).mkdir()
        part = [r for r in records if r.config in configs]
        write_json(tmp_path / name / "results.json", {**meta, "command": name},
                   [row for row in everything if row["name"] in configs], part)
    assert report_main([str(tmp_path / "first"), "--add", str(tmp_path / "more")]) == 0
    merged = json.loads((tmp_path / "first" / "results.json").read_text())
    assert merged["summary"] == json.loads(json.dumps(everything))
    assert merged["paired"] == paired(records, [e.name for e in grid])
    assert merged["meta"]["added"] == [{"command": "more", "total_s": None}]
    assert "| fa | swa@0.25 | 4 | 3 | 0 | 0.25 |" in (tmp_path / "first" / "results.md").read_text()
    # Adding it again repeats its configurations; other prompts are refused.
    with pytest.raises(SystemExit, match="repeats configurations of .*: swa@0.25"):
        report_main([str(tmp_path / "first"), "--add", str(tmp_path / "more")])
    (tmp_path / "other").mkdir()
    write_json(tmp_path / "other" / "results.json", {**meta, "seed": 1}, [], [])
    with pytest.raises(SystemExit, match="evaluated other prompts than .*: seed differ"):
        report_main([str(tmp_path / "first"), "--add", str(tmp_path / "other")])


def test_thinking_runs_report_how_the_reasoning_blocks_ended():
    grid, records = _fixture()
    completions = ["<think>the key is 11111</think> It is 12345.", "<think>still going 12345",
                   "The pass key is 12345.", "<think>a</think><think>b</think> 12345"]
    for r in records:
        r.completion = completions[r.index]
        r.new_tokens = 10 * (r.index + 1)
    summary = summarize(records, [describe(e) for e in grid])
    assert summary[0]["reasoning"] == {"closed": 2, "unclosed": 1, "absent": 1,
                                       "new_tokens_mean": 25.0}
    meta = {"model": "m", "tasks": ["passkey"], "samples": 4, "seed": 0, "device": "cpu",
            "threads": 2, "thinking": True, "thinking_budget": 1024, "answer_prefix": False}
    table = markdown(meta, summary)
    assert "thinking (budget 1024 tokens), no answer prefix" in table.splitlines()[0]
    assert "**Reasoning blocks** (thinking prompts, budget 1024 tokens" in table
    assert "| swa@0.25 | 2 | 1 | 1 | 25 |" in table
    # Without thinking the style is stated and there is no reasoning table.
    direct = markdown({**meta, "thinking": False, "thinking_budget": None,
                       "answer_prefix": True}, summary)
    assert "no thinking, answer prefix" in direct.splitlines()[0]
    assert "Reasoning blocks" not in direct
