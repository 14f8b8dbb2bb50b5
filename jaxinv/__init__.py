"""jaxinv: learned variational regularizers for imaging inverse problems, in JAX."""
