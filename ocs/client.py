"""A small asyncio Diameter client on our codec: CER, then requests matched to answers by hop-by-hop id.

For tests, probing a live server and scripting; the load generator has its own lean engine.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import struct

from protocol import constants as C
from protocol.base import decode_cea, encode_cer, encode_dpr, encode_dwr
from protocol.cca import decode_cca
from protocol.ccr import encode_ccr
from protocol.framer import Framer
from protocol.header import Header, decode_header
from protocol.records import CCA, CCR, CEA, CER, DPR, DWR

_IDS = struct.Struct(">II")


class DiameterClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 origin_host: str, origin_realm: str) -> None:
        self.reader = reader
        self.writer = writer
        self.origin_host = origin_host
        self.origin_realm = origin_realm
        self._hbh = itertools.count(random.getrandbits(31))
        self._e2e = itertools.count(random.getrandbits(31))
        self._pending: dict[int, asyncio.Future[bytes]] = {}
        self.requests_from_server: list[tuple[Header, bytes]] = []
        self._framer = Framer(1 << 20)
        self._reader_task = asyncio.create_task(self._read_loop())
        self.closed = asyncio.Event()

    @classmethod
    async def connect(cls, host: str, port: int, origin_host: str = "client.test",
                      origin_realm: str = "test", cer: bool = True) -> DiameterClient:
        reader, writer = await asyncio.open_connection(host, port)
        client = cls(reader, writer, origin_host, origin_realm)
        if cer:
            cea = await client.capabilities_exchange()
            if cea.result_code != C.DIAMETER_SUCCESS:
                raise ConnectionError(f"CER refused: {cea.result_code}")
        return client

    def next_ids(self) -> tuple[int, int]:
        return next(self._hbh) & 0xFFFFFFFF, next(self._e2e) & 0xFFFFFFFF

    async def _read_loop(self) -> None:
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    break
                for frame in self._framer.feed(data):
                    header = decode_header(frame)
                    if header.is_request:
                        self.requests_from_server.append((header, frame))
                        continue
                    fut = self._pending.pop(header.hop_by_hop, None)
                    if fut is not None and not fut.done():
                        fut.set_result(frame)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.closed.set()
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("connection closed"))
            self._pending.clear()

    async def request_raw(self, frame: bytes, timeout: float = 10.0) -> bytes:
        """Send an encoded request; wait for the answer with its hop-by-hop id."""
        hbh = _IDS.unpack_from(frame, 12)[0]
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[hbh] = fut
        self.writer.write(frame)
        return await asyncio.wait_for(fut, timeout)

    async def capabilities_exchange(self, cer: CER | None = None) -> CEA:
        cer = cer or CER(origin_host=self.origin_host, origin_realm=self.origin_realm,
                         host_ip_addresses=["127.0.0.1"], vendor_id=0, product_name="ocs-client",
                         auth_application_ids=[C.APP_CREDIT_CONTROL],
                         supported_vendor_ids=[C.VENDOR_3GPP])
        return decode_cea(await self.request_raw(encode_cer(cer, *self.next_ids())))

    async def ccr(self, ccr: CCR, *, retransmit: bool = False, ids: tuple[int, int] | None = None,
                  timeout: float = 10.0) -> CCA:
        if not ccr.origin_host:
            ccr.origin_host, ccr.origin_realm = self.origin_host, self.origin_realm
        hbh, e2e = ids or self.next_ids()
        frame = encode_ccr(ccr, hbh, e2e, retransmit=retransmit)
        return decode_cca(await self.request_raw(frame, timeout))

    async def watchdog(self) -> bytes:
        return await self.request_raw(encode_dwr(DWR(origin_host=self.origin_host,
                                                     origin_realm=self.origin_realm), *self.next_ids()))

    async def disconnect(self) -> bytes:
        return await self.request_raw(encode_dpr(DPR(origin_host=self.origin_host,
                                                     origin_realm=self.origin_realm,
                                                     disconnect_cause=0), *self.next_ids()))

    async def close(self) -> None:
        self._reader_task.cancel()
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass
