"""orjson (a PyO3 wheel from PyPI, stripped: only .dynsym is left) holding the GIL in
`orjson.dumps` of a large object, for `gilscope check`'s naming of stripped objects.

    python check_orjson.py SITE

SITE is a directory with orjson installed. After the pause for `check` to attach, three
`dumps` calls of ~50-100 ms each (more on a loaded machine), all with the GIL held.
"""

import sys
import time

sys.path.insert(0, sys.argv[1])

import orjson  # noqa: E402

data = [{"k%d" % i: [i, str(i), float(i), {"x": i}] for i in range(50)} for _ in range(6000)]
print("ready", flush=True)
time.sleep(1.5)
for _ in range(3):
    orjson.dumps(data)  # LINE:dumps
