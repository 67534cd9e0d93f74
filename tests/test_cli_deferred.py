"""runix.cli.deferred: a deferred module runs on first use, once, whichever thread asks, and `runix deploy` keeps
the unused parts of http.client's and tarfile's imports unrun. Each check runs in a fresh interpreter (deferral is
per process)."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def run_python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_a_deferred_module_runs_on_first_use() -> None:
    out = run_python("""
        import sys
        from runix.cli import deferred
        assert "shutil" not in sys.modules
        deferred.install()
        import shutil
        print(type(shutil).__name__, "which" in vars(shutil), shutil.__name__, shutil.__spec__.name)
        print(shutil.which("sh") is not None, type(shutil).__name__, type(shutil.__loader__).__name__)
        from shutil import copyfile  # a from-import runs it too (here it already ran)
        print(copyfile.__name__)
    """)
    assert out.splitlines() == ["_Deferred False shutil shutil", "True module SourceFileLoader", "copyfile"]


def test_a_from_import_runs_it_at_once() -> None:
    out = run_python("""
        import sys
        from runix.cli import deferred
        deferred.install()
        import locale
        print(type(locale).__name__)
        from locale import normalize
        print(type(locale).__name__, normalize("en_US"))
    """)
    assert out.splitlines() == ["_Deferred", "module en_US.ISO8859-1"]


def test_threads_asking_at_once_see_the_whole_module_once() -> None:
    out = run_python("""
        import sys, threading
        from runix.cli import deferred
        deferred.install()
        import shutil
        runs, seen = [], []
        real_exec = shutil.__loader__.loader.exec_module
        def counted(module):
            runs.append(1)
            real_exec(module)
        shutil.__loader__.loader.exec_module = counted
        start = threading.Barrier(8)
        def use():
            start.wait()
            seen.append(shutil.which("sh") is not None)
        threads = [threading.Thread(target=use) for _ in range(8)]
        for t in threads: t.start()
        for t in threads: t.join()
        print(len(runs), sorted(set(seen)))
    """)
    assert out == "1 [True]"


def test_deploy_start_up_leaves_the_unused_modules_unrun() -> None:
    """What `runix deploy` imports before its first request: the client over http.client, and packing, with the
    deferred modules made but not run (a change in the standard library that starts using one shows here, and only
    costs start-up time); httpx is not imported at all."""
    out = run_python("""
        import os, sys
        sys.argv = ["runix", "deploy"]
        os.environ["RUNIX_TOKEN"] = "t"
        os.environ["RUNIX_API_URL"] = "http://api.runix.test:9"
        for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
            os.environ.pop(name, None)
        from runix.cli import deferred
        deferred.install()
        from runix.cli.common import connect
        from runix.cli import packing
        client = connect()
        packing.list_source(__import__("pathlib").Path("."))
        ran = sorted(name for name in deferred.DEFERRED
                     if name in sys.modules and type(sys.modules[name]) is not deferred._Deferred)
        print(ran, type(client.transport).__name__, "httpx" in sys.modules)
    """)
    assert out == "[] StdlibTransport False"
