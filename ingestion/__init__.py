"""Ingestion: device fleets to bronze Delta.

The edge producer SDK (:mod:`ingestion.producer`) is what a device embeds:
``EdgeProducer.send(contract_id, device_id, record)`` refuses what may not leave the
device, writes the rest to a crash-safe disk spool (:mod:`ingestion.spool`) and returns
the device's sequence number; a sender thread drains the spool to Kafka in order
(``acks=all``, idempotent), retrying from the spool through outages. The fleet
simulator, topic admin and the Kafka -> bronze streaming job live here too.
"""
