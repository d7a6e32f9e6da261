"""Rating: tariffs, their compiled array form, and the numba kernels that price usage."""
