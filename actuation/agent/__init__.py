"""The edge agent: what runs on a device (installable with the edge extra)."""
