"""``python -m mcp_oauthd`` is ``mcp-oauthd``."""

from __future__ import annotations

import sys

from mcp_oauthd.cli import main

if __name__ == "__main__":
    sys.exit(main())
