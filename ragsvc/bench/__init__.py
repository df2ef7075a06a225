"""Benchmarks: `ragsvc bench ...` commands writing JSON under eval/results/."""
