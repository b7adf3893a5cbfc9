"""One module per method, each reading like its paper."""
