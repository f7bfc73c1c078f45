"""Ray processes left behind by a run that was killed with SIGKILL.

A run that is stopped by a signal shuts its Ray down itself. One killed with SIGKILL
cannot, and most of its local Ray instance follows it (its children notice the pipe to
their parent closing), but a few helper processes (Ray's dashboard and runtime-env
agents) are adopted by init and live on. The run records the session directory of each
Ray it starts; a resumed run ends the orphans of those sessions, and only those: never
another study's Ray (this is not ``ray stop``).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

__all__ = ["reap_orphans", "session_dir"]


def session_dir() -> str | None:
    """The session directory of the local Ray this process started, if any."""
    try:
        import ray
        node = ray._private.worker._global_node  # noqa: SLF001 (no public accessor)
        return node.get_session_dir_path() if node is not None else None
    except Exception:  # not started, or a client connection to a remote cluster
        return None


def reap_orphans(sessions: list[str]) -> int:
    """SIGKILL processes adopted by init whose command line names one of ``sessions``;
    returns how many were ended."""
    if not sessions:
        return 0
    ended = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == 1 and any(s in cmdline for s in sessions):
            try:
                os.kill(int(entry.name), signal.SIGKILL)
                ended += 1
            except OSError:
                pass
    return ended
