"""TCP keepalive on nbqueue's Redis connections (``connection.Connection`` clients).

A peer gone without FIN/RST (its host down, a NAT or firewall that dropped the flow and its
packets) is noticed by the kernel after about idle + interval x count seconds (~25 s), even
on a connection nobody is reading from. A far end that still ACKs but forwards nothing (a
stuck proxy) is not: blocking calls catch that one by their reply timeout
(``protocol.BLOCK_REPLY_MARGIN_S``).
"""

from __future__ import annotations

import socket
from typing import Any

#: seconds idle before the first probe, seconds between probes, probes before giving up
KEEPALIVE = {"TCP_KEEPIDLE": 10, "TCP_KEEPINTVL": 5, "TCP_KEEPCNT": 3}


def options(url: str) -> dict[str, Any]:
    """redis-py client options for ``url``: keepalive on TCP, nothing for a unix socket."""
    if url.lower().startswith("unix"):
        return {}
    return {"socket_keepalive": True, "socket_keepalive_options": {
        getattr(socket, name): value for name, value in KEEPALIVE.items()
        if hasattr(socket, name)}}
