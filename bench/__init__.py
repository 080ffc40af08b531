"""Benchmarks for hostedjobs' engine against raw arq (``python -m bench.engine``)."""
