"""Count the XLA compilations of one ``jaxinv train`` run, by the function compiled.

    python benchmarks/compilations.py --task denoise --model bilevel --arch foe --steps 200 \
        --out /tmp/run --no-figures --quiet

The arguments are those of ``jaxinv train``. The count comes from JAX's own compile log
(``jax_log_compiles``), with the persistent compilation cache off, so that every program is
compiled in this process. A training run should compile its step once, whatever its length.
"""

from __future__ import annotations

import collections
import logging
import os
import sys

os.environ["JAXINV_COMPILATION_CACHE"] = "off"

import jax  # noqa: E402

from jaxinv import cli  # noqa: E402


class _CompileLog(logging.Handler):
    """Counts JAX's ``Compiling <name> ...`` log records by name."""

    def __init__(self) -> None:
        super().__init__()
        self.names: collections.Counter[str] = collections.Counter()

    def emit(self, record: logging.LogRecord) -> None:
        words = record.getMessage().split()
        if len(words) > 1 and words[0] == "Compiling":
            self.names[words[1]] += 1


def main(argv: list[str]) -> int:
    jax.config.update("jax_log_compiles", True)
    log = _CompileLog()
    jax_logger = logging.getLogger("jax")
    jax_logger.addHandler(log)
    jax_logger.setLevel(logging.WARNING)  # the compile records are warnings; keep them off stderr
    jax_logger.propagate = False
    status = cli.main(["train", *argv])
    print(f"compilations: {sum(log.names.values())}")
    for name, count in log.names.most_common():
        print(f"  {count:4d}  {name}")
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
