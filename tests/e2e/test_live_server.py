"""The browser tests' live server itself: a browser that leaves a page before its favicon
has arrived resets the connection, and that must not leak the file (the leak's warning,
an error under filterwarnings, failed whichever browser test was running when collected)."""

from __future__ import annotations

import gc
import socket
import struct
import time
from urllib.parse import urlsplit


def test_a_connection_reset_mid_file_leaks_no_file_handle(live_server):
    address = urlsplit(live_server)
    for _ in range(40):  # each reset races the server's reply: many, so some land mid-reply
        connection = socket.create_connection((address.hostname, address.port))
        connection.sendall(b"GET /static/favicon.svg HTTP/1.1\r\nHost: e2e\r\n\r\n")
        time.sleep(0.002)
        # Linger 0: close sends a reset, as a browser dropping a request does.
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        connection.close()
    time.sleep(0.5)  # the server's threads finish with the dropped connections
    gc.collect()  # a leaked file warns here, which fails this test
