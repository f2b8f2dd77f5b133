"""CUDA C++ sources of the engine's raw kernels (package data, loaded with cupy.RawModule)."""
