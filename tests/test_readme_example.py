"""The README's adapt example runs as written (on the packaged SmolLM2, offline)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_block(heading: str) -> str:
    section = README.read_text().split(heading, 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_adapt_example_runs_and_its_window_slides(capsys):
    namespace: dict = {}
    exec(compile(readme_block("### Adapting a transformers model"), "README.md", "exec"),
         namespace)
    assert namespace["prompt_len"] > 2 * namespace["config"].window  # the window bites
    assert namespace["logits"].shape[1] == namespace["prompt_len"]
    assert namespace["model"].config._attn_implementation != "swaa"  # restored
    assert capsys.readouterr().out.strip()  # generate printed the reply
