"""Thin edges, one module per outside thing: VICI, iptables, nftables, netlink, sysctl,
sd_notify, HTTP."""
