"""Evaluation: generation with fixed seeds, win rates with bootstrap intervals, image grids."""
