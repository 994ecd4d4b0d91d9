"""Segment stages (weights-free)."""
