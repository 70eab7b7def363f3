"""Ingestion: device fleets to bronze Delta.

The edge producer SDK with its disk spool, the fleet simulator, topic admin and the
Kafka -> bronze streaming job live here (issue: ingestion). Nothing is built yet.
"""
