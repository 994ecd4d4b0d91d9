"""Trimap stages."""
