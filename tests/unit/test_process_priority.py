"""PROCESS_NICE lowers a process's priority against processes of other sessions too."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PROBE = """
import os
from pathlib import Path
from shared.service.app import lower_priority
lower_priority(7)
autogroup = Path("/proc/self/autogroup")
print(os.nice(0), autogroup.read_text().strip() if autogroup.exists() else "-")
"""


def test_the_nice_value_and_the_session_s_autogroup_are_both_raised() -> None:
    # In a session of its own, as the stack and a supervisor start each service: there a
    # plain nice value ranks nothing against the other sessions' processes.
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         check=True, start_new_session=True,
                         cwd=Path(__file__).resolve().parents[2]).stdout.split(maxsplit=1)
    nice, autogroup = int(out[0]), out[1].strip()
    assert nice == 7
    if Path("/proc/self/autogroup").exists():  # kernels with session autogroups
        assert autogroup.endswith("nice 7"), autogroup
