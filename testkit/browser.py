"""``python -m testkit.browser``: make sure Debian's Chromium is installed for the browser tests
(tests/e2e drive it through the playwright wheel; ``playwright install`` is never run).

Installs the ``chromium`` package with apt-get when /usr/bin/chromium is missing (as root, or
through sudo when it is available); says what to do otherwise. Exits 0 when Chromium is there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from storage.settings import child_environment

CHROMIUM = "/usr/bin/chromium"


def main() -> int:
    if os.path.exists(CHROMIUM):
        print(f"{CHROMIUM}: present")
        return 0
    apt = shutil.which("apt-get")
    if apt is None:
        print(f"{CHROMIUM} is missing and this is not a Debian/Ubuntu machine: install Chromium so that "
              f"{CHROMIUM} exists (the browser tests need it)", file=sys.stderr)
        return 1
    sudo = [] if os.geteuid() == 0 else (["sudo", "-n"] if shutil.which("sudo") else None)
    if sudo is None:
        print(f"{CHROMIUM} is missing: run `apt-get install -y chromium` as root", file=sys.stderr)
        return 1
    env = child_environment({"DEBIAN_FRONTEND": "noninteractive"})
    print("installing Debian's chromium (for the browser tests) ...", flush=True)
    for cmd in (sudo + [apt, "update", "-qq"], sudo + [apt, "install", "-y", "-qq", "chromium"]):
        if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL).returncode != 0:
            print(f"`{' '.join(cmd)}` failed: install the chromium package, then run the tests again",
                  file=sys.stderr)
            return 1
    return 0 if os.path.exists(CHROMIUM) else 1


if __name__ == "__main__":
    raise SystemExit(main())
