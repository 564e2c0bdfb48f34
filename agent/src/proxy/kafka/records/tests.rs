//! The batch filter on batches the crate encodes, as a broker's would be.

use bytes::{Bytes, BytesMut};
use indexmap::IndexMap;
use kafka_protocol::{
    protocol::StrBytes,
    records::{
        Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
        TimestampType,
    },
};

use super::{Counted, filter};

/// Records at offsets `first..first + keys.len()`, each with a `baggage`
/// header when its key is `Some`.
fn records(first: i64, keys: &[Option<&str>], control: bool) -> Vec<Record> {
    keys.iter()
        .zip(first..)
        .map(|(key, offset)| {
            let mut headers = IndexMap::new();
            if let Some(key) = key {
                headers.insert(
                    StrBytes::from_static_str("baggage"),
                    Some(Bytes::from(format!("detour-routing-key={key}"))),
                );
            }
            Record {
                transactional: control,
                control,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: 7,
                producer_epoch: 0,
                timestamp_type: TimestampType::Creation,
                offset,
                sequence: i32::try_from(offset).expect("small"),
                timestamp: 1_000 + offset,
                key: None,
                value: Some(Bytes::from(offset.to_string())),
                headers,
            }
        })
        .collect()
}

fn batch(records: &[Record], compression: Compression) -> Bytes {
    let mut out = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression,
    };
    RecordBatchEncoder::encode(&mut out, records.iter(), &options).expect("encodes");
    out.freeze()
}

fn keyed(record: &Record, key: &str) -> bool {
    let wanted = format!("detour-routing-key={key}");
    record.headers.iter().any(|(name, value)| {
        name.as_str() == "baggage" && value.as_deref() == Some(wanted.as_bytes())
    })
}

/// (offsets of the records, base offset + last offset delta of the last
/// batch) of `bytes`, every batch's CRC checked by the decoder.
fn read(bytes: &Bytes) -> (Vec<i64>, i64) {
    let sets = RecordBatchDecoder::decode_all(&mut bytes.clone()).expect("decodes");
    let offsets = sets
        .iter()
        .flat_map(|s| s.records.iter().map(|r| r.offset))
        .collect();
    let mut at = 0;
    let mut last = 0;
    while at < bytes.len() {
        let base = i64::from_be_bytes(bytes[at..at + 8].try_into().expect("8"));
        let length = i32::from_be_bytes(bytes[at + 8..at + 12].try_into().expect("4"));
        let delta = i32::from_be_bytes(bytes[at + 23..at + 27].try_into().expect("4"));
        last = base + i64::from(delta);
        at += 12 + usize::try_from(length).expect("length");
    }
    (offsets, last)
}

#[test]
fn a_batch_keeps_its_records_and_its_end_in_every_codec() {
    let keys = [
        None,
        Some("feature-x"),
        Some("other"),
        Some("feature-x"),
        None,
    ];
    for compression in [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let original = batch(&records(10, &keys, false), compression);
        let (kept, counted) = filter(&original, |r| keyed(r, "feature-x")).expect("filters");
        assert_eq!(
            counted,
            Counted {
                kept: 2,
                dropped: 3,
                keyed: 0
            },
            "{compression:?}"
        );
        assert_eq!(
            read(&kept),
            (vec![11, 13], 14),
            "{compression:?}: ends at the original end"
        );
        let codec = RecordBatchDecoder::decode(&mut kept.clone())
            .expect("decodes")
            .compression;
        assert_eq!(codec, compression, "re-encoded in the same codec");
    }
}

#[test]
fn a_batch_that_keeps_all_is_untouched_and_one_that_keeps_none_still_advances() {
    let original = batch(
        &records(10, &[Some("feature-x"); 3], false),
        Compression::Gzip,
    );
    let (all, _) = filter(&original, |_| true).expect("filters");
    assert_eq!(all, original, "byte for byte");
    let (none, counted) = filter(&original, |_| false).expect("filters");
    assert_eq!(
        counted,
        Counted {
            kept: 0,
            dropped: 3,
            keyed: 0
        }
    );
    assert_eq!(
        read(&none),
        (vec![], 12),
        "no records, and the consumer goes on after 12"
    );
}

#[test]
fn control_batches_and_a_partial_last_batch_pass_untouched() {
    let control = batch(&records(5, &[None], true), Compression::None);
    let data = batch(&records(6, &[None, None], false), Compression::None);
    let mut bytes = BytesMut::new();
    bytes.extend_from_slice(&control);
    bytes.extend_from_slice(&data);
    bytes.extend_from_slice(&data[..data.len() / 2]);
    let bytes = bytes.freeze();
    let (out, counted) = filter(&bytes, |_| false).expect("filters");
    assert_eq!(counted.dropped, 2);
    assert_eq!(
        &out[..control.len()],
        &control[..],
        "the marker is as it was"
    );
    assert_eq!(&out[out.len() - data.len() / 2..], &data[..data.len() / 2]);
}

#[test]
fn produced_records_without_a_key_get_the_member_in_their_codec() {
    let mut produced = records(0, &[Some("other"), None, None], false);
    produced[2].headers.insert(
        StrBytes::from_static_str("baggage"),
        Some(Bytes::from_static(b"team=a")),
    );
    for compression in [Compression::None, Compression::Zstd] {
        let original = batch(&produced, compression);
        let keyless = |r: &Record| !keyed(r, "other");
        let (out, added) =
            super::add_baggage(&original, "detour-routing-key=feature-x", keyless).expect("adds");
        assert_eq!(added, 2, "{compression:?}");
        let set = RecordBatchDecoder::decode(&mut out.clone()).expect("decodes, CRC and all");
        assert_eq!(set.compression, compression);
        let baggage: Vec<String> = set
            .records
            .iter()
            .map(|r| {
                r.headers
                    .iter()
                    .find(|(n, _)| n.as_str() == "baggage")
                    .and_then(|(_, v)| v.clone())
                    .map(|v| String::from_utf8_lossy(&v).into_owned())
                    .unwrap_or_default()
            })
            .collect();
        assert_eq!(
            baggage,
            [
                "detour-routing-key=other",
                "detour-routing-key=feature-x",
                "team=a,detour-routing-key=feature-x"
            ]
        );
        assert_eq!(
            set.records.iter().map(|r| r.offset).collect::<Vec<_>>(),
            [0, 1, 2]
        );
    }
    let untouched = batch(&produced, Compression::None);
    let (same, added) = super::add_baggage(&untouched, "m=x", |_| false).expect("as is");
    assert_eq!((same, added), (untouched, 0));
}
