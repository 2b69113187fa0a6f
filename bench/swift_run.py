"""Run one Swift server of the SAIO (`bench.swift_saio`) with our swift.conf instead of /etc/swift.

Swift reads swift.conf from a module constant at import time (storage policies, hash prefix), so
the constant is set before any server module is imported. Runs inside Swift's own venv.
Usage: ``python -m bench.swift_run {account|container|object|proxy} CONF``.
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    import swift.common.utils as swift_utils

    swift_utils.SWIFT_CONF_FILE = os.environ["ARKOR_SWIFT_CONF"]
    from swift.common.wsgi import run_wsgi

    kind, conf = sys.argv[1], sys.argv[2]
    section = {"account": "account-server", "container": "container-server",
               "object": "object-server", "proxy": "proxy-server"}[kind]
    sys.exit(run_wsgi(conf, section))


if __name__ == "__main__":
    main()
