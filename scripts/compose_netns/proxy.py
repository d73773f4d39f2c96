"""Published ports (`ports: - "3000:3000"`): run in the namespace that stands
for the machine, it listens on every address there, IPv4 and IPv6, as
Docker's userland proxy does, and forwards each connection to the service's
container. Arguments: PUBLISHED=ADDRESS:PORT ...; prints `ready` once all
listen."""

from __future__ import annotations

import asyncio
import sys


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()


def _forward(address: str, port: int):
    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            reader, writer = await asyncio.open_connection(address, port)
        except OSError:
            client_writer.close()  # nothing listens in the container: reset, as Docker does
            return
        await asyncio.gather(_pipe(client_reader, writer), _pipe(reader, client_writer))
        writer.close()
        client_writer.close()

    return handle


async def main(mappings: list[str]) -> None:
    servers = []
    for mapping in mappings:
        published, _, target = mapping.partition("=")
        address, _, port = target.rpartition(":")
        servers.append(await asyncio.start_server(_forward(address, int(port)), port=int(published), reuse_address=True))
    print("ready", flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
