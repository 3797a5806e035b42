"""Backends: the device a model runs on, chosen once at `create()` (`cvflow.backend.make_backend`).

`base.Backend` (every op, generic over NumPy/CuPy arrays; prepared layers, constants,
per-pass memos), `cpu.CPUBackend` (the NumPy ops and the activation arena),
`cuda.backend.CudaBackend` (the kernels of `kernels/*.cu` on a CuPy or emulator executor).
"""
