"""Load for benches/http_server.py: GET requests in a loop, one connection each (as the
server speaks HTTP/1.0), each closed with a reset, for SECONDS; prints {"requests", "elapsed", "rps"}.

    http_client.py PORT SECONDS
"""

import http.client
import json
import socket
import struct
import sys
import time


def main():
    port, secs = int(sys.argv[1]), float(sys.argv[2])
    n, t0 = 0, time.perf_counter()
    end = t0 + secs
    while time.perf_counter() < end:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.connect()
        # Closed with a reset (SO_LINGER 0), not a FIN: one connection per request leaves
        # ~10 000 sockets in TIME_WAIT per 8 s run otherwise, and with 20 000 of them every
        # connect() searches longer for a free 4-tuple (throughput fell from 1,270 to 460
        # requests/s over five 4 s runs here, and came back once they had expired).
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.request("GET", "/item/%d" % n)
        r = c.getresponse()
        r.read()
        c.close()
        n += 1
    el = time.perf_counter() - t0
    print(json.dumps({"requests": n, "elapsed": el, "rps": n / el}), flush=True)


if __name__ == "__main__":
    main()
