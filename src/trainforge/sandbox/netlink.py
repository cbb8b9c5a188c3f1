"""The few rtnetlink requests a job's network needs, sent on a socket of one network namespace.

One request per step, acknowledged, instead of an ``ip`` process per namespace (a process costs
milliseconds; a request microseconds). Only what :mod:`.network` uses: create a bridge or a veth
pair (its peer in another namespace), set a link up (and its master), add an IPv4 address, add a
prohibiting route, delete a link. Kernel errors come back as :class:`OSError` with the kernel's errno.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct

RTM_NEWLINK, RTM_DELLINK, RTM_NEWADDR, RTM_NEWROUTE = 16, 17, 20, 24
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
NLMSG_ERROR = 2
IFLA_IFNAME, IFLA_MTU, IFLA_MASTER, IFLA_LINKINFO, IFLA_NET_NS_FD = 3, 4, 10, 18, 28
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_DST, RT_TABLE_MAIN, RTPROT_BOOT, RTN_PROHIBIT = 1, 254, 3, 8
IFF_UP = 0x1
NLA_F_NESTED = 0x8000
_HEADER = struct.Struct("=IHHII")
_IFINFO = struct.Struct("=BxHiII")
_IFADDR = struct.Struct("=BBBBI")
_RTMSG = struct.Struct("=BBBBBBBBI")


def attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def name_attr(name: str) -> bytes:
    return attr(IFLA_IFNAME, name.encode() + b"\0")


def ifinfo(index: int = 0, up: bool = False) -> bytes:
    return _IFINFO.pack(socket.AF_UNSPEC, 0, index, IFF_UP if up else 0, IFF_UP if up else 0)


class Netlink:
    """An rtnetlink socket of the network namespace the calling thread is in when it is made."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                  socket.NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def request(self, kind: int, flags: int, body: bytes) -> None:
        self.seq += 1
        self.sock.send(_HEADER.pack(_HEADER.size + len(body), kind, NLM_F_REQUEST | NLM_F_ACK | flags,
                                    self.seq, 0) + body)
        while True:
            reply = self.sock.recv(65536)
            offset = 0
            while offset + _HEADER.size <= len(reply):
                length, rtype, _, seq, _ = _HEADER.unpack_from(reply, offset)
                if rtype == NLMSG_ERROR and seq == self.seq:
                    (code,) = struct.unpack_from("=i", reply, offset + _HEADER.size)
                    if code:
                        raise OSError(-code, os.strerror(-code))
                    return
                offset += max(length + (-length % 4), _HEADER.size)

    def add_bridge(self, name: str, mtu: int) -> None:
        info = attr(IFLA_LINKINFO | NLA_F_NESTED, attr(IFLA_INFO_KIND, b"bridge"))
        self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL,
                     ifinfo(up=True) + name_attr(name) + attr(IFLA_MTU, struct.pack("=I", mtu)) + info)

    def add_veth(self, name: str, peer: str, peer_netns_fd: int, mtu: int) -> None:
        """A veth pair: ``name`` here, ``peer`` in the namespace open at ``peer_netns_fd``."""
        mtu_attr = attr(IFLA_MTU, struct.pack("=I", mtu))
        peer_body = ifinfo() + name_attr(peer) + mtu_attr + attr(IFLA_NET_NS_FD, struct.pack("=I", peer_netns_fd))
        data = attr(IFLA_INFO_DATA | NLA_F_NESTED, attr(VETH_INFO_PEER | NLA_F_NESTED, peer_body))
        info = attr(IFLA_LINKINFO | NLA_F_NESTED, attr(IFLA_INFO_KIND, b"veth") + data)
        self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, ifinfo() + name_attr(name) + mtu_attr + info)

    def set_up(self, name: str, master: int | None = None) -> None:
        extra = attr(IFLA_MASTER, struct.pack("=I", master)) if master is not None else b""
        self.request(RTM_NEWLINK, 0, ifinfo(up=True) + name_attr(name) + extra)

    def add_address(self, name: str, interface: str) -> None:
        """Add ``interface`` (``"10.200.0.11/16"``) to the link called ``name``."""
        network = ipaddress.IPv4Interface(interface)
        packed = network.ip.packed
        body = _IFADDR.pack(socket.AF_INET, network.network.prefixlen, 0, 0, socket.if_nametoindex(name))
        self.request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body + attr(IFA_LOCAL, packed) + attr(IFA_ADDRESS, packed))

    def prohibit(self, destination: str) -> None:
        """A route refusing (EACCES) every packet to ``destination`` (``"192.0.2.2/32"``)."""
        network = ipaddress.IPv4Network(destination)
        body = _RTMSG.pack(socket.AF_INET, network.prefixlen, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, 0, RTN_PROHIBIT, 0)
        self.request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, body + attr(RTA_DST, network.network_address.packed))

    def delete(self, name: str) -> None:
        self.request(RTM_DELLINK, 0, ifinfo() + name_attr(name))
