"""Pure core: parsing, desired state, diffing, classification. Data in, data out.

Nothing in this package does I/O beyond reading configuration files, imports asyncio,
sockets, iptc or pyroute2.
"""
