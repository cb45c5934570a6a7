"""The Claude Code CLI and nothing else: argv, environment, process, and what its lines mean.

Nothing in this package imports aiohttp.
"""
