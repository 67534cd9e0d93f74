"""A real DNS server on loopback (dnslib, UDP and TCP) that answers TXT records the test sets.

Runix looks up domain-verification records through `RUNIX_DNS_RESOLVER=127.0.0.1:<port>` against it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from dnslib import QTYPE, RCODE, RR, TXT
from dnslib.server import BaseResolver, DNSServer

from tests.support import free_port


class TxtRecords(BaseResolver):
    """Answers TXT queries from a dict of name -> values; every other name is NXDOMAIN."""

    def __init__(self) -> None:
        self._records: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        self.queries: list[str] = []

    def set(self, name: str, *values: str) -> None:
        with self._lock:
            self._records[name.lower().rstrip(".")] = list(values)

    def clear(self, name: str) -> None:
        with self._lock:
            self._records.pop(name.lower().rstrip("."), None)

    def resolve(self, request, handler):  # noqa: ANN001, ANN201 - dnslib's interface
        reply = request.reply()
        name = str(request.q.qname).lower().rstrip(".")
        with self._lock:
            self.queries.append(name)
            values = self._records.get(name)
        if values is None:
            reply.header.rcode = RCODE.NXDOMAIN
        elif request.q.qtype in (QTYPE.TXT, QTYPE.ANY):
            for value in values:
                reply.add_answer(RR(request.q.qname, QTYPE.TXT, rdata=TXT(value), ttl=1))
        return reply


class LoopbackDns:
    def __init__(self) -> None:
        self.records = TxtRecords()
        self.port = free_port()
        self._servers = [DNSServer(self.records, address="127.0.0.1", port=self.port, tcp=tcp, logger=_Quiet())
                         for tcp in (False, True)]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> LoopbackDns:
        for server in self._servers:
            server.start_thread()
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.stop()
            server.server.server_close()


class _Quiet:
    """dnslib logs every query to stdout by default."""

    def __getattr__(self, name: str):  # noqa: ANN204
        return lambda *args, **kwargs: None


@pytest.fixture(scope="session")
def dns() -> Iterator[LoopbackDns]:
    server = LoopbackDns().start()
    try:
        yield server
    finally:
        server.stop()
