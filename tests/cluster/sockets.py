"""The sockets that given processes listen on, read from /proc (Linux) as ``ss -ltup``
would show them."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

_LISTEN = {"tcp": "0A", "udp": "07"}  # TCP LISTEN; a bound, unconnected UDP socket


@dataclass(frozen=True)
class Listening:
    protocol: str
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    port: int
    pid: int
    process: str

    @property
    def loopback(self) -> bool:
        address = self.address
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return address.is_loopback

    def __str__(self) -> str:
        return f"{self.protocol} {self.address}:{self.port} ({self.process}, pid {self.pid})"


def _address(hex_address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    raw = bytes.fromhex(hex_address)
    # The kernel prints each 32-bit word in host (little-endian) order.
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(words)


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    except OSError:  # the process has ended
        pass
    return inodes


def listening_sockets(pids: list[int]) -> list[Listening]:
    """Every TCP socket in LISTEN and every bound UDP socket the processes hold."""
    owner: dict[str, int] = {}
    for pid in pids:
        for inode in _socket_inodes(pid):
            owner[inode] = pid
    found = []
    for protocol in ("tcp", "udp"):
        for family in ("", "6"):
            table = Path(f"/proc/net/{protocol}{family}")
            if not table.exists():
                continue
            for line in table.read_text().splitlines()[1:]:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state != _LISTEN[protocol] or inode not in owner:
                    continue
                hex_address, hex_port = local.split(":")
                pid = owner[inode]
                try:
                    process = Path(f"/proc/{pid}/comm").read_text().strip()
                except OSError:
                    process = "?"
                found.append(
                    Listening(protocol, _address(hex_address), int(hex_port, 16), pid, process)
                )
    return found
