"""sakuga: a production job server for ComfyUI."""

__version__ = "0.1.0"
