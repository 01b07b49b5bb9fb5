"""Accuracy and cost measurement: analytic FLOPs and prefill timing."""
