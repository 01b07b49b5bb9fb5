"""hybridreduce: stateful token reduction for long-video hybrid (Mamba-Transformer) VLMs, as a workflow."""

__version__ = "0.1.0"
