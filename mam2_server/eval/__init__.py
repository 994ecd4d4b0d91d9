"""Evaluation of alpha mattes against ground truth (RVM / MAM2 paper metrics)."""
from mam2_server.eval.metrics import METRICS, SequenceMetrics, conn, dtssd, format_table, grad, mad, mse

__all__ = ["METRICS", "SequenceMetrics", "conn", "dtssd", "format_table", "grad", "mad", "mse"]
