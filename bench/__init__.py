"""mercury-bench: reproducible numbers for latency, decoding speed, quality and throughput."""
