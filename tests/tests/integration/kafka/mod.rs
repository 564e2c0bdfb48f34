//! Kafka: a real broker (Apache Kafka in KRaft mode, from Maven Central's
//! jars) and a real client (confluent-kafka, librdkafka) through detour, on
//! a port declared `kafka`.

mod passthrough;
