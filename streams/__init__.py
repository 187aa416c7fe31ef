"""The stream side: the local broker, and (next) the Kafka worker that joins and learns."""
