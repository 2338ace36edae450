"""Shared pieces every method builds on. ``core`` never imports a method."""
