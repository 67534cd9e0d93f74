"""A hostile tenant app (stdlib only): each endpoint tries one attack from inside its sandbox and reports what
happened as JSON, so a test can assert the attack failed while the app itself still serves."""

import json
import os
import socket
import subprocess
import sys
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def read(path):
    try:
        with open(path, "rb") as f:
            return {"ok": True, "data": f.read(4096).decode("utf-8", "replace")}
    except OSError as exc:
        return {"ok": False, "error": type(exc).__name__}


def connect(target):
    host, _, port = target.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return "connected"
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return "timeout"
    except OSError as exc:
        return type(exc).__name__


def gateway():
    with open("/proc/net/route") as f:
        for line in f.read().splitlines()[1:]:
            fields = line.split()
            if fields[1] == "00000000":
                return socket.inet_ntoa(int(fields[2], 16).to_bytes(4, "little"))
    return None


def own_address():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((gateway() or "127.0.0.1", 9))  # a UDP "connect" sends nothing: it only picks the source address
        return s.getsockname()[0]


def environments():
    """Every process environment the app can read, pid 1 (the sandbox's init) included."""
    found = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            found[pid] = read(f"/proc/{pid}/environ")
    return found


def fork(n):
    started = []
    for _ in range(n):
        try:
            started.append(subprocess.Popen(["sleep", "30"]))
        except OSError:
            break
    for p in started:
        p.kill()
        p.wait()
    return len(started)


def fill_tmp():
    written = 0
    chunk = b"x" * (1 << 20)
    try:
        with open("/tmp/fill", "wb") as f:
            while written < (4 << 30):
                f.write(chunk)
                f.flush()
                written += len(chunk)
    except OSError as exc:
        return {"written": written, "error": type(exc).__name__}
    finally:
        if os.path.exists("/tmp/fill"):
            os.unlink("/tmp/fill")
    return {"written": written, "error": None}


def user_namespace():
    """Tries to make a user namespace of its own, as kernel exploits begin: with unshare(2), and with the tool."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    code = libc.unshare(0x10000000)  # CLONE_NEWUSER
    tool = subprocess.run(["unshare", "--user", "--map-root-user", "id", "-u"], capture_output=True, text=True)
    return {"unshare": code, "errno": ctypes.get_errno(), "tool": tool.returncode, "tool_output": tool.stdout}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        if url.path == "/":
            body = {"app": os.environ.get("APP_NAME", "hostile")}
        elif url.path == "/whoami":
            body = {"uid": os.getuid(), "gid": os.getgid(), "address": own_address(), "gateway": gateway(),
                    "env": dict(os.environ), "environs": environments(), "build_uid": read("build-uid.txt")}
        elif url.path == "/headers":
            body = {name.lower(): self.headers.get_all(name) for name in set(self.headers.keys())}
        elif url.path == "/read":
            body = read(query["path"])
        elif url.path == "/connect":
            body = {t: connect(t) for t in query["to"].split(",")}
        elif url.path == "/fork":
            body = {"started": fork(int(query["n"]))}
        elif url.path == "/fill-tmp":
            body = fill_tmp()
        elif url.path == "/userns":
            body = user_namespace()
        elif url.path == "/eat-memory":
            hog = bytearray(int(query["mb"]) << 20)  # touched: bytearray zero-fills it
            body = {"survived": len(hog)}
        else:
            self.send_error(404)
            return
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    print("hostile app listening", flush=True)
    ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
    sys.exit(1)
