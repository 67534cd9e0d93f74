"""runix.cli.deferred: a deferred module runs on first use, once, whichever thread asks, and `runix deploy` keeps
the unused parts of httpx's imports unrun. Each check runs in a fresh interpreter (deferral is per process)."""

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
        assert "mimetypes" not in sys.modules
        deferred.install()
        import mimetypes
        print(type(mimetypes).__name__, "guess_type" in vars(mimetypes), mimetypes.__name__, mimetypes.__spec__.name)
        print(mimetypes.guess_type("a.html")[0], type(mimetypes).__name__, type(mimetypes.__loader__).__name__)
        from mimetypes import guess_extension  # a from-import runs it too (here it already ran)
        print(guess_extension("text/html"))
    """)
    assert out.splitlines() == ["_Deferred False mimetypes mimetypes", "text/html module SourceFileLoader", ".html"]


def test_a_from_import_runs_it_at_once_and_packages_keep_their_path() -> None:
    out = run_python("""
        from runix.cli import deferred
        deferred.install()
        import idna
        print(type(idna).__name__, bool(idna.__path__))  # __path__ is there before the code runs
        from idna import encode
        print(type(idna).__name__, encode("bücher.example").decode())
    """)
    assert out.splitlines() == ["_Deferred True", "module xn--bcher-kva.example"]


def test_threads_asking_at_once_see_the_whole_module_once() -> None:
    out = run_python("""
        import sys, threading
        from runix.cli import deferred
        deferred.install()
        import mimetypes
        runs, seen = [], []
        real_exec = mimetypes.__loader__.loader.exec_module
        def counted(module):
            runs.append(1)
            real_exec(module)
        mimetypes.__loader__.loader.exec_module = counted
        start = threading.Barrier(8)
        def use():
            start.wait()
            seen.append(mimetypes.guess_type("x.css")[0])
        threads = [threading.Thread(target=use) for _ in range(8)]
        for t in threads: t.start()
        for t in threads: t.join()
        print(len(runs), sorted(set(seen)))
    """)
    assert out == "1 ['text/css']"


def test_deploy_start_up_leaves_the_unused_modules_unrun() -> None:
    """What `runix deploy` imports before its first request: httpx and the client, with the deferred modules made
    but not run (a change in httpx that starts using one shows here, and only costs start-up time)."""
    out = run_python("""
        import os, sys
        sys.argv = ["runix", "deploy"]
        os.environ["RUNIX_TOKEN"] = "t"
        os.environ["RUNIX_API_URL"] = "http://api.runix.test:9"  # a name: an IP address would load ipaddress
        from runix.cli import deferred
        deferred.install()
        from runix.cli.common import connect
        from runix.cli import packing
        client = connect()
        client.http.build_request("GET", "/x")
        ran = sorted(name for name in deferred.DEFERRED
                     if name in sys.modules and type(sys.modules[name]) is not deferred._Deferred)
        print(ran, "httpx._main" in sys.modules and type(sys.modules["httpx._main"]).__name__, "click" in sys.modules)
    """)
    assert out == "[] module False"
