"""Load for benches/http_server.py: GET requests in a loop, one connection each (as the
server speaks HTTP/1.0), for SECONDS; prints {"requests", "elapsed", "rps"}.

    http_client.py PORT SECONDS
"""

import http.client
import json
import sys
import time


def main():
    port, secs = int(sys.argv[1]), float(sys.argv[2])
    n, t0 = 0, time.perf_counter()
    end = t0 + secs
    while time.perf_counter() < end:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("GET", "/item/%d" % n)
        r = c.getresponse()
        r.read()
        c.close()
        n += 1
    el = time.perf_counter() - t0
    print(json.dumps({"requests": n, "elapsed": el, "rps": n / el}), flush=True)


if __name__ == "__main__":
    main()
