"""Data: manifests, corpus synthesis and importers, datasets and batching."""
