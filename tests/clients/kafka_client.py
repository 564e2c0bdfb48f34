#!/usr/bin/env python3
"""A Kafka client for the Kafka tests: confluent-kafka (librdkafka), Debian's build.

Usage:
  kafka_client.py produce BOOTSTRAP TOPIC COUNT [OPTION ...] [HEADER=VALUE ...]
      Produces COUNT records (values "0".."COUNT-1", each with the given
      headers), waits until the broker acknowledged them all, prints
      "produced COUNT". Options: --compression=CODEC (gzip, snappy, lz4,
      zstd); --transaction=commit|abort (in one transaction, then committed
      or aborted).
  kafka_client.py consume BOOTSTRAP TOPIC GROUP COUNT [SECONDS [ISOLATION]]
      Joins GROUP, reads TOPIC from the beginning until COUNT records came
      or SECONDS (default 30) passed, commits, and prints one JSON line per
      record: {"value": ..., "headers": {name: value}}. ISOLATION:
      read_uncommitted (the default) or read_committed.
Errors go to standard error and the exit status is 1.
"""
import json
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer


def produce(bootstrap, topic, count, args):
    failures = []
    config = {"bootstrap.servers": bootstrap, "acks": "all"}
    options = dict(a[2:].split("=", 1) for a in args if a.startswith("--"))
    if "compression" in options:
        config["compression.type"] = options["compression"]
    transaction = options.get("transaction")
    if transaction:
        config["transactional.id"] = f"detour-test-{topic}"
    producer = Producer(config)
    if transaction:
        producer.init_transactions(30)
        producer.begin_transaction()
    pairs = [tuple(h.split("=", 1)) for h in args if not h.startswith("--")]
    for i in range(count):
        producer.produce(
            topic,
            value=str(i).encode(),
            headers=pairs,
            on_delivery=lambda err, _msg: err and failures.append(str(err)),
        )
    left = producer.flush(30)
    if transaction == "commit":
        producer.commit_transaction(30)
    elif transaction == "abort":
        producer.abort_transaction(30)
    if left or failures:
        sys.exit(f"{left} records unacknowledged, failures: {failures}")
    print(f"produced {count}", flush=True)


def consume(bootstrap, topic, group, count, seconds, isolation):
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": isolation,
        }
    )
    consumer.subscribe([topic])
    received = 0
    deadline = time.monotonic() + seconds
    try:
        while received < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error():
                raise KafkaException(message.error())
            headers = {k: v.decode() for k, v in (message.headers() or [])}
            print(json.dumps({"value": message.value().decode(), "headers": headers}), flush=True)
            received += 1
        if received:
            consumer.commit(asynchronous=False)
    finally:
        consumer.close()


def main():
    command, bootstrap, topic = sys.argv[1], sys.argv[2], sys.argv[3]
    if command == "produce":
        produce(bootstrap, topic, int(sys.argv[4]), sys.argv[5:])
    elif command == "consume":
        seconds = float(sys.argv[6]) if len(sys.argv) > 6 else 30.0
        isolation = sys.argv[7] if len(sys.argv) > 7 else "read_uncommitted"
        consume(bootstrap, topic, sys.argv[4], int(sys.argv[5]), seconds, isolation)
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main()
