// A Kafka client for the Kafka tests: Apache Kafka's own Java client
// (kafka-clients, from the jars `cargo xtask setup` fetched), run as a
// single-file program: java -cp 'libs/*' KafkaClient.java ARGS.
//
// Usage (as tests/clients/kafka_client.py, plus the group protocol):
//   produce BOOTSTRAP TOPIC COUNT [HEADER=VALUE ...]
//       COUNT records (values "0".."COUNT-1", each with the headers),
//       acknowledged by the broker; prints "produced COUNT".
//   consume BOOTSTRAP TOPIC GROUP COUNT SECONDS PROTOCOL
//       Joins GROUP with PROTOCOL ("classic", or "consumer": KIP-848),
//       reads TOPIC from the beginning until COUNT records came or SECONDS
//       passed, commits, prints one JSON line per record:
//       {"value": ..., "headers": {"name": "value"}}.
// Errors go to standard error and the exit status is 1.

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.List;
import java.util.Properties;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class KafkaClient {
    public static void main(String[] args) throws Exception {
        switch (args[0]) {
            case "produce" -> produce(args);
            case "consume" -> consume(args);
            default -> throw new IllegalArgumentException("unknown command " + args[0]);
        }
    }

    static void produce(String[] args) throws Exception {
        Properties props = new Properties();
        props.put("bootstrap.servers", args[1]);
        props.put("acks", "all");
        props.put("key.serializer", ByteArraySerializer.class.getName());
        props.put("value.serializer", ByteArraySerializer.class.getName());
        int count = Integer.parseInt(args[3]);
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(props)) {
            for (int i = 0; i < count; i++) {
                ProducerRecord<byte[], byte[]> record =
                        new ProducerRecord<>(args[2], null, bytes(Integer.toString(i)));
                for (int h = 4; h < args.length; h++) {
                    String[] pair = args[h].split("=", 2);
                    record.headers().add(pair[0], bytes(pair[1]));
                }
                producer.send(record).get();
            }
        }
        System.out.println("produced " + count);
    }

    static void consume(String[] args) {
        Properties props = new Properties();
        props.put("bootstrap.servers", args[1]);
        props.put("group.id", args[3]);
        props.put("group.protocol", args[6]);
        props.put("auto.offset.reset", "earliest");
        props.put("enable.auto.commit", "false");
        props.put("key.deserializer", ByteArrayDeserializer.class.getName());
        props.put("value.deserializer", ByteArrayDeserializer.class.getName());
        int count = Integer.parseInt(args[4]);
        long deadline = System.nanoTime() + (long) (Double.parseDouble(args[5]) * 1e9);
        int received = 0;
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(props)) {
            consumer.subscribe(List.of(args[2]));
            while (received < count && System.nanoTime() < deadline) {
                for (ConsumerRecord<byte[], byte[]> record : consumer.poll(Duration.ofMillis(500))) {
                    StringBuilder headers = new StringBuilder();
                    for (Header header : record.headers()) {
                        if (headers.length() > 0) headers.append(", ");
                        headers.append(quote(header.key())).append(": ")
                                .append(quote(new String(header.value(), StandardCharsets.UTF_8)));
                    }
                    System.out.println("{\"value\": " + quote(new String(record.value(), StandardCharsets.UTF_8))
                            + ", \"headers\": {" + headers + "}}");
                    received++;
                }
            }
            if (received > 0) consumer.commitSync();
        }
    }

    static byte[] bytes(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    static String quote(String s) {
        return "\"" + s.replace("\\", "\\\\").replace("\"", "\\\"") + "\"";
    }
}
