"""The committed CUDA instantiation files are exactly what their generator writes (no GPU needed):
the generator's list is the one source of truth for the nvcc, switch-header and emulated builds."""

from __future__ import annotations

import importlib.util
from pathlib import Path

CUDA_DIR = Path(__file__).resolve().parent.parent / "csrc" / "swaa" / "cuda"


def test_generated_files_are_committed(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("generate_instantiations",
                                                  CUDA_DIR / "generate_instantiations.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    generator.main(tmp_path)
    expected = {p.name: p.read_text() for p in tmp_path.iterdir()}
    committed = {p.name: p.read_text() for p in (CUDA_DIR / "instantiations").iterdir()}
    assert committed == expected, "run csrc/swaa/cuda/generate_instantiations.py and commit"
    per_direction = len(generator.DTYPES) * len(generator.HEAD_DIMS) + 1
    assert len(expected) == len(generator.DIRECTIONS) * per_direction
