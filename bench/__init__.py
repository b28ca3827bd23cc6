"""The mcp-oauthd benchmark harness (issue 10): ``bench/run`` or ``python -m bench``.

Starts a bare aiohttp baseline and mcp-oauthd on each storage backend, seeds state, loads
each with wrk and reports throughput and latency as ratios to the baseline measured in the
same run. See ``bench/README.md``.
"""
