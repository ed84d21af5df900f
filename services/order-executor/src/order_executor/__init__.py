"""Applies risk rules to signals and places orders."""
