"""PortCut: a cut link on loopback, for one TCP port.

PortCut(port).cut() drops every loopback packet to or from that port (nftables: a table of its
own, named after this process and the port, so tests running at once never touch each other's):
to both ends the link is cut: nothing arrives, no reset comes back, new connections time out.
.restore() removes the table (also safe when it is not there). Needs root and nft
(scripts/install-deps.sh installs nftables); PortCut.available() says whether this process can, as
(True, "") or (False, the reason).
"""

import os
import shutil
import subprocess


class PortCut:
    def __init__(self, port):
        self.port = port
        self.table = "agora_cut_%d_%d" % (os.getpid(), port)

    @staticmethod
    def available():
        if os.geteuid() != 0:
            return False, "cutting a link with nftables needs root"
        if not shutil.which("nft"):
            return False, "nft is not installed (scripts/install-deps.sh test installs nftables)"
        return True, ""

    def cut(self):
        rules = ("table ip %s {\n chain out {\n  type filter hook output priority 0;\n  tcp dport %d drop\n"
                 "  tcp sport %d drop\n }\n}\n") % (self.table, self.port, self.port)
        subprocess.run(["nft", "-f", "-"], input=rules, text=True, check=True, capture_output=True)

    def restore(self):
        subprocess.run(["nft", "delete", "table", "ip", self.table], capture_output=True)
