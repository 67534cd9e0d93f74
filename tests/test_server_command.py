"""`runix server` itself: a busy port is refused in one clear line, not a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

from tests.support import RUNIX, free_port


def test_busy_router_port_is_named_and_the_server_exits_1(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("RUNIX_")}
        env["RUNIX_DATA_DIR"] = str(tmp_path / "data")
        result = subprocess.run([RUNIX, "server", "--port", str(free_port()), "--router-port", str(taken)],
                                env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    assert f"cannot listen for the router on 127.0.0.1:{taken}" in result.stderr
    assert "--router-port" in result.stderr and "Traceback" not in result.stderr
