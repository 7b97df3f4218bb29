"""A TCP proxy that delays every reply by a fixed time: a remote Redis, simulated on loopback.

Only the server-to-client direction is delayed: uvloop's timers have millisecond resolution, so half a
millisecond each way would become about a millisecond each way. Order is kept (one queue and one writer per
direction), so RESP framing is never reordered. Measured here with --delay 0.001: PING p50 ~1.2 ms through the
proxy against ~0.02 ms direct.

    python -m benchmarks.delay_proxy --listen PORT --target HOST:PORT --delay SECONDS
"""

from __future__ import annotations

import argparse
import asyncio
import collections

import uvloop


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    loop = asyncio.get_running_loop()
    queue: collections.deque[tuple[float, bytes]] = collections.deque()
    arrived = asyncio.Event()
    closed = False

    async def deliver() -> None:
        while not (closed and not queue):
            if not queue:
                arrived.clear()
                await arrived.wait()
                continue
            due, data = queue[0]
            wait = due - loop.time()
            if delay and wait > 0:
                await asyncio.sleep(wait)
            queue.popleft()
            writer.write(data)
        writer.close()

    sender = loop.create_task(deliver())
    try:
        while data := await reader.read(65536):
            queue.append((loop.time() + delay, data))
            arrived.set()
    except ConnectionError:
        pass
    finally:
        closed = True
        arrived.set()
        await sender


async def serve(listen: int, host: str, port: int, delay: float) -> None:
    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(host, port)
        await asyncio.gather(_pipe(client_r, server_w, 0.0), _pipe(server_r, client_w, delay))

    server = await asyncio.start_server(handle, "127.0.0.1", listen)
    async with server:
        await server.serve_forever()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", type=int, required=True)
    ap.add_argument("--target", required=True)
    ap.add_argument("--delay", type=float, required=True, help="seconds added to every reply")
    args = ap.parse_args()
    host, _, port = args.target.rpartition(":")
    uvloop.run(serve(args.listen, host, int(port), args.delay))


if __name__ == "__main__":
    main()
