//! The Kafka batch filter (`detour::proxy::kafka::records`): no panic on any
//! bytes a broker could send as a partition's records, and what it returns
//! is stable: kept records pass a second filter with the same rule
//! untouched, and a rule that keeps everything returns its input byte for
//! byte.
//!
//! The first input byte picks the rule (which records, by offset, are kept);
//! the rest is the records.

#![no_main]

use bytes::Bytes;
use detour::proxy::kafka::records::filter;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&rule, records)) = data.split_first() else {
        return;
    };
    let records = Bytes::copy_from_slice(records);
    let keep = |record: &kafka_protocol::records::Record| {
        rule == 0xff || (record.offset as u8) & rule != 0
    };
    if let Ok((all, counted)) = filter(&records, |_| true) {
        assert_eq!(all, records, "keeping everything changed the bytes");
        assert_eq!(counted.dropped, 0);
    }
    let Ok((kept, counted)) = filter(&records, keep) else {
        return;
    };
    let (again, recounted) = filter(&kept, keep).expect("its own output filters");
    assert_eq!(again, kept, "a second pass changed the bytes");
    assert_eq!(recounted.dropped, 0, "a second pass dropped records");
    assert_eq!(recounted.kept, counted.kept, "a second pass counts what the first kept");
});
