"""Evaluation protocols for learned representations."""
