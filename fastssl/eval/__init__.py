"""Evaluation: kNN monitor, online and offline linear probes."""
