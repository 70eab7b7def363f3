"""The cloud side of ingestion: what runs next to the brokers and the lake, never on a device.

:mod:`ingestion.cloud.topics` keeps one Kafka topic per data contract (created, retention
aligned; none for secret streams). :mod:`ingestion.cloud.bronze` is the Spark Structured
Streaming job that lands every valid record in ``bronze/<table>`` exactly once and every
other one in ``quarantine/<table>`` with a reason. The bronze job needs PySpark and Delta,
which a device never installs: nothing in the edge SDK imports this package.
"""
