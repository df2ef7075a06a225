"""Model architectures built from ragsvc.serving.layers."""
