"""mercury_engine: the persistent diffusion-infilling process."""

__version__ = "0.1.0"
