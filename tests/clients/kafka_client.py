#!/usr/bin/env python3
"""A Kafka client for the Kafka tests: confluent-kafka (librdkafka), Debian's build.

Usage:
  kafka_client.py produce BOOTSTRAP TOPIC COUNT [HEADER=VALUE ...]
      Produces COUNT records (values "0".."COUNT-1", each with the given
      headers), waits until the broker acknowledged them all, prints
      "produced COUNT".
  kafka_client.py consume BOOTSTRAP TOPIC GROUP COUNT [SECONDS]
      Joins GROUP, reads TOPIC from the beginning until COUNT records came
      or SECONDS (default 30) passed, commits, and prints one JSON line per
      record: {"value": ..., "headers": {name: value}}.
Errors go to standard error and the exit status is 1.
"""
import json
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer


def produce(bootstrap, topic, count, headers):
    failures = []
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    pairs = [tuple(h.split("=", 1)) for h in headers]
    for i in range(count):
        producer.produce(
            topic,
            value=str(i).encode(),
            headers=pairs,
            on_delivery=lambda err, _msg: err and failures.append(str(err)),
        )
    left = producer.flush(30)
    if left or failures:
        sys.exit(f"{left} records unacknowledged, failures: {failures}")
    print(f"produced {count}", flush=True)


def consume(bootstrap, topic, group, count, seconds):
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
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
        consume(bootstrap, topic, sys.argv[4], int(sys.argv[5]), seconds)
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main()
