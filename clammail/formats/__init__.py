"""Parsers of file formats the engine needs to understand (executables, ...)."""
