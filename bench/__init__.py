"""sakuga's benchmarks: orchestration overhead, throughput and dispatch gap (``make bench``)."""
