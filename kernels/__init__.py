"""CUDA sources (*.cu) for the CuPy backend, shipped as package data (cvflow.kernels)."""
