"""Training data and the recipe of the bundled audio tower (not installed)."""
