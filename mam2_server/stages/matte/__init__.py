"""Matte stages and matting helpers."""
