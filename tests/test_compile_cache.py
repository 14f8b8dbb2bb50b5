"""The persistent compilation cache: where the command line puts it, and that it is used."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxinv.cli import CLIError, make_parser
from jaxinv.compile_cache import ENV, default_cache_dir, enable_compilation_cache


def test_default_directory_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "jaxinv" / "xla"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "jaxinv" / "xla"
    monkeypatch.setenv(ENV, str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"
    for off in ("off", "0", "False", "none", ""):
        monkeypatch.setenv(ENV, off)
        assert default_cache_dir() is None


def test_an_unusable_directory_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ValueError, match="compilation cache.*JAXINV_COMPILATION_CACHE=off"):
        enable_compilation_cache(blocker / "xla")


def test_every_command_takes_the_cache_options():
    parser = make_parser()
    train = ["train", "--task", "denoise", "--model", "bilevel", "--out", "o"]
    for command in (train, ["eval", "run"], ["restore", "m", "f", "--out", "o"]):
        args = parser.parse_args(command + ["--no-compile-cache"])
        assert args.no_compile_cache
        args = parser.parse_args(command + ["--compile-cache", "d"])
        assert args.compile_cache == Path("d")
    with pytest.raises(CLIError, match="not allowed with"):
        parser.parse_args(train + ["--no-compile-cache", "--compile-cache", "d"])


# The second process runs the command line with a listener on JAX's cache-hit events.
_COUNT_HITS = """
import sys
import jax.monitoring
from jaxinv.cli import main
hits = []
jax.monitoring.register_event_listener(
    lambda event, **kw: hits.append(event) if event.endswith("/cache_hits") else None
)
code = main(sys.argv[1:])
print("cache hits:", len(hits))
sys.exit(code)
"""


def test_restore_writes_its_solve_to_the_cache_and_the_next_process_reuses_it(tmp_path):
    image = tmp_path / "noisy.npy"
    np.save(image, np.random.default_rng(0).uniform(0, 1, (12, 12)).astype(np.float32))
    cache = tmp_path / "xla"
    # every program is kept, however fast it compiled (the default keeps those > 1 s only, and
    # how long the 12x12 solve compiles depends on the machine's load)
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}

    def restore(out, *prefix):
        cmd = [sys.executable, *prefix, "restore", "foe-student-t-s25", str(image), "--raw"]
        cmd += ["--out", str(tmp_path / out), "--compile-cache", str(cache)]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        return done.stdout

    restore("a", "-m", "jaxinv.cli")
    solves = [p.name for p in cache.iterdir() if "reconstruct" in p.name]
    assert len(solves) == 1, sorted(p.name for p in cache.iterdir())
    printed = restore("b", "-c", _COUNT_HITS)
    hits = int(printed.rsplit("cache hits:", 1)[1])
    assert hits >= 1, printed  # the solve (at least) came from the cache, not the compiler
    # the cached program computes what the compiled one did
    np.testing.assert_array_equal(
        np.load(tmp_path / "a" / "noisy.npy"), np.load(tmp_path / "b" / "noisy.npy")
    )
