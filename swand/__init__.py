"""swand: reconciles strongSwan's charon and the gateway's kernel state with swanctl.conf."""

__version__ = "0.1.0"
