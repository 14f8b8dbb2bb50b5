"""The tests run with the annotations checked (tests/conftest.py): a call that breaks a
jaxtyping shape or dtype raises, and ``unchecked`` turns the checks off."""

import jax.numpy as jnp
import jaxtyping
import numpy as np
import pytest

from jaxinv.energies import data_fidelity
from jaxinv.operators import Identity


def test_a_wrongly_shaped_or_typed_argument_raises_a_type_check_error(unchecked):
    image, line = jnp.ones((4, 5)), jnp.ones(5)
    assert float(data_fidelity(image, image, Identity(), 2.0)) == 0.0
    with pytest.raises(jaxtyping.TypeCheckError, match="parameter 'x'"):
        data_fidelity(line, line, Identity(), 2.0)  # x is "*batch H W": at least 2 axes
    with pytest.raises(jaxtyping.TypeCheckError, match="parameter 'x'"):
        data_fidelity(jnp.ones((4, 5), int), image, Identity(), 2.0)  # x is Float
    with unchecked():
        np.testing.assert_allclose(data_fidelity(line, 0 * line, Identity(), 2.0), 5.0)
