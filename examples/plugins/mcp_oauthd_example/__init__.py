"""Example mcp-oauthd plugins: the ``fixed_user`` provider and the ``journal`` storage."""

__version__ = "0.1.0"
