"""MAM2: promptable video matting (Matting Anything 2) for compositing pipelines."""

__version__ = "0.1.0"
