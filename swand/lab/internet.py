"""Services of the lab's "internet" (the router namespace): a web host that says whom it
sees, and radvd advertising the provider's prefix to the gateway.

Both run in the router's namespace (`ipv6=True` labs), are killed on teardown like every
process the lab starts, and write only below the router's lab folder.
"""

from __future__ import annotations

import subprocess
import sys
from typing import TYPE_CHECKING

from swand.lab.util import LabError, wait_for

if TYPE_CHECKING:
    from swand.lab.lab import Host

#: an HTTP server on [::]:80 (both families) answering every GET with the source address
#: it sees, one line per request also printed to stdout (the log)
_WEB_SERVER = r"""
import http.server, socket, sys

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        peer = self.client_address[0].removeprefix("::ffff:")
        body = peer.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        print(peer, flush=True)

    def log_message(self, *args):
        pass

class Server(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6
    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()

print("listening", flush=True)
Server(("::", int(sys.argv[1])), Handler).serve_forever()
"""


class WebHost:
    """`lab.web_host()`: GET http://[INTERNET_HOST6]/ (or the IPv4 one) from a client and
    the body is the source address the web host saw; `peers()` lists them all."""

    def __init__(self, router: Host, port: int = 80) -> None:
        self.router = router
        self.port = port
        self.log_path = router.workdir / "web.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = router.popen([sys.executable, "-c", _WEB_SERVER, str(port)],
                                 stdout=self._log, stderr=subprocess.STDOUT)
        wait_for(lambda: "listening" in self.log_path.read_text() or self.proc.poll() is not None,
                 10, message="web host start")
        if self.proc.poll() is not None:
            raise LabError(f"web host failed: {self.log_path.read_text()}")

    def url(self, address: str) -> str:
        host = f"[{address}]" if ":" in address else address
        return f"http://{host}:{self.port}/"

    def peers(self) -> list[str]:
        return [ln for ln in self.log_path.read_text().splitlines()[1:] if ln]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self._log.close()


def fetch(host: Host, url: str, timeout: float = 5.0) -> str | None:
    """GET `url` from `host`'s namespace; the body, or None when it fails (no route, no
    answer)."""
    code = ("import sys, urllib.request; sys.stdout.write(urllib.request.urlopen("
            "sys.argv[1], timeout=float(sys.argv[2])).read().decode())")
    proc = host.run([sys.executable, "-c", code, url, str(timeout)], check=False,
                    timeout=timeout + 10)
    return proc.stdout.strip() if proc.returncode == 0 else None


class Radvd:
    """radvd on one of the router's interfaces, advertising `prefix` on-link (no SLAAC)
    and the router as default router every 3-4 s (radvd's minimum), lifetime 30 s."""

    def __init__(self, router: Host, iface: str, prefix: str) -> None:
        self.router = router
        conf = router.workdir / f"radvd-{iface}.conf"
        conf.write_text(f"""interface {iface} {{
    AdvSendAdvert on;
    MinRtrAdvInterval 3;
    MaxRtrAdvInterval 4;
    AdvDefaultLifetime 30;
    prefix {prefix} {{
        AdvOnLink on;
        AdvAutonomous off;
    }};
}};
""")
        self.log_path = router.workdir / f"radvd-{iface}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = router.popen(
            ["radvd", "--nodaemon", "--config", str(conf), "--logmethod", "stderr",
             "--pidfile", str(router.workdir / f"radvd-{iface}.pid")],
            stdout=self._log, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()

