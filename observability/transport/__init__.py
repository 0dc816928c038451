"""Event transport: one interface, two real backends (`local`, `kafka`)."""

from __future__ import annotations

from observability.settings import Settings, get_settings
from observability.transport.base import Producer, Record, TopicReader, partition_for


def create_producer(settings: Settings | None = None, **kwargs) -> Producer:
    s = settings or get_settings()
    if s.transport == "kafka":
        from observability.transport.kafka import KafkaProducerTransport, create_topics

        create_topics(s.kafka_broker, s.topics, s.topic_partitions, s.kafka_replication_factor)
        return KafkaProducerTransport(s.kafka_broker, **kwargs)
    from observability.transport.local_log import LocalLogProducer, ensure_topic

    for t in s.topics:
        ensure_topic(s.log_dir, t, s.topic_partitions)
    return LocalLogProducer(
        s.log_dir, partitions=s.topic_partitions, fsync=s.log_fsync, segment_bytes=s.log_segment_bytes, **kwargs
    )


def create_reader(settings: Settings | None = None, **kwargs) -> TopicReader:
    s = settings or get_settings()
    if s.transport == "kafka":
        from observability.transport.kafka import KafkaTopicReader

        return KafkaTopicReader(s.kafka_broker, **kwargs)
    from observability.transport.local_log import LocalLogReader

    return LocalLogReader(s.log_dir)


def create_topics(settings: Settings | None = None) -> list[str]:
    """Admin step: create the topics with the configured partition counts."""
    s = settings or get_settings()
    if s.transport == "kafka":
        from observability.transport.kafka import create_topics as kafka_create

        return kafka_create(s.kafka_broker, s.topics, s.topic_partitions, s.kafka_replication_factor)
    from observability.transport.local_log import ensure_topic, topic_partitions

    created = [t for t in s.topics if not topic_partitions(s.log_dir, t)]
    for t in s.topics:
        ensure_topic(s.log_dir, t, s.topic_partitions)
    return created


__all__ = ["Producer", "Record", "TopicReader", "partition_for", "create_producer", "create_reader", "create_topics"]
