"""Test configuration: float64 everywhere so gradients can be compared tightly, no persistent
compilation cache (the command line would otherwise write to ~/.cache), and the package's
annotations, jaxtyping dtypes and shapes included, checked at run time by beartype.

The import hook must be installed before anything imports jaxinv; it stays installed for the
whole session so that the modules jaxinv imports lazily are checked too. beartype is told to
follow PEP 484's numeric tower (an ``int`` is a ``float``), as static checkers do.
``JAXTYPING_DISABLE=1`` turns the checks off.

Tests that pass values outside the annotated types on purpose, to test the errors that the
library itself raises for them, run without the checks: a whole test marked ``unchecked``, or
one call inside ``with unchecked():`` (a fixture).
"""

import contextlib
import os

import jax
import jaxtyping
import pytest

os.environ.setdefault("JAXINV_COMPILATION_CACHE", "off")
jax.config.update("jax_enable_x64", True)
# jaxtyping calls ``<this string>(function)``; beartype(conf=...) returns the decorator
jaxtyping.install_import_hook(
    "jaxinv", "beartype.beartype(conf=beartype.BeartypeConf(is_pep484_tower=True))"
)


@pytest.fixture
def unchecked():
    """A context manager that turns the runtime type checks off inside its block."""

    @contextlib.contextmanager
    def off():
        before = jaxtyping.config.jaxtyping_disable
        jaxtyping.config.update("jaxtyping_disable", True)
        try:
            yield
        finally:
            jaxtyping.config.update("jaxtyping_disable", before)

    return off


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "unchecked: run the test without runtime type checks")


@pytest.fixture(autouse=True)
def _unchecked_marker(request: pytest.FixtureRequest, unchecked):
    if request.node.get_closest_marker("unchecked") is None:
        yield
    else:
        with unchecked():
            yield
