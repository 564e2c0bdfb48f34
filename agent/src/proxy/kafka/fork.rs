//! What a connection from a sandbox's fork pod changes: its consumer groups
//! are its own, and it fetches only its sandbox's records.
//!
//! **Groups.** Every consumer group id it names is rewritten to
//! `<group>.detour-<sandbox>` (the sandbox's `/` written `.`) in the
//! requests that name one, and written back in the responses that echo it.
//! So a fork of a consumer that uses the baseline's group id joins a group
//! of its own: it never takes partitions from the baseline's consumers,
//! and its committed offsets are its own.
//!
//! Requests rewritten: FindCoordinator (group keys), JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch (one group or many),
//! ConsumerGroupHeartbeat (KIP-848), TxnOffsetCommit. Responses written
//! back: FindCoordinator (v4 and later name their keys), OffsetFetch (v8
//! and later name their groups). Every other frame passes unchanged. A
//! rewritten frame is decoded and encoded again at the version the client
//! sent, with the `kafka-protocol` crate.
//!
//! **Records.** In every Fetch response it receives, each partition's
//! records are filtered ([`super::records`]): it gets only those whose
//! headers carry its sandbox's routing key (read from the headers with the
//! same rules as HTTP's: `baggage`, `tracestate`, the custom header names).
//! The records it produces that carry no routing key get the sandbox's as a
//! `baggage` member, as its HTTP requests do.

use std::collections::HashMap;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::{
    messages::{
        ApiKey, ConsumerGroupHeartbeatRequest, FetchResponse, FindCoordinatorRequest,
        FindCoordinatorResponse, GroupId, HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest,
        OffsetCommitRequest, OffsetFetchRequest, OffsetFetchResponse, ProduceRequest,
        RequestHeader, ResponseHeader, SyncGroupRequest, TxnOffsetCommitRequest,
    },
    protocol::{Decodable, Encodable, StrBytes},
    records::Record,
};

use super::{
    frame::{FrameError, RequestInfo},
    records::{self, Counted},
};
use crate::http::routing_key::RoutingKeys;

/// `FindCoordinator`'s key type for a consumer group.
const GROUP_KEY: i8 = 0;

/// The rewrite of one fork pod's connection.
pub struct ForkConn {
    /// What its group ids get: `.detour-<sandbox>`.
    suffix: String,
    /// The sandbox's routing key: the records it fetches carry it.
    key: String,
    /// The `baggage` member its produced records without a key get.
    member: String,
    /// Requests whose responses are written back, by correlation id.
    pending: HashMap<i32, (ApiKey, i16)>,
}

impl ForkConn {
    /// The rewrite for a fork pod of `sandbox`.
    pub fn new(sandbox: &str, key: &str, member: String) -> Self {
        Self {
            suffix: format!(".detour-{}", sandbox.replace('/', ".")),
            key: key.to_owned(),
            member,
            pending: HashMap::new(),
        }
    }

    /// The group id `group` stands for on this connection. An empty one is
    /// a field the request's version does not have: it stays empty.
    fn own(&self, group: &StrBytes) -> StrBytes {
        if group.is_empty() {
            return group.clone();
        }
        StrBytes::from_string(format!("{}{}", group.as_str(), self.suffix))
    }

    fn own_group(&self, group: &GroupId) -> GroupId {
        GroupId(self.own(&group.0))
    }

    /// The client's own name for `group`.
    fn theirs(&self, group: &StrBytes) -> StrBytes {
        match group.as_str().strip_suffix(&self.suffix) {
            Some(original) => StrBytes::from_string(original.to_owned()),
            None => group.clone(),
        }
    }

    /// `frame` (a request) with its group ids rewritten, and a produce
    /// request's records without a key given the sandbox's (counted by
    /// topic into `counted`), or as it is.
    pub fn request(
        &mut self,
        info: &RequestInfo,
        frame: Bytes,
        keys: &RoutingKeys,
        counted: &mut Vec<(String, Counted)>,
    ) -> Result<Bytes, FrameError> {
        let Some(api) = info.api else {
            return Ok(frame);
        };
        let version = info.version;
        let header_version = api.request_header_version(version);
        let mut body = frame.slice(4..);
        let header = decode::<RequestHeader>(&mut body, header_version, api, version)?;
        let rewritten = match api {
            ApiKey::FindCoordinator => {
                let mut request =
                    decode::<FindCoordinatorRequest>(&mut body, version, api, version)?;
                if request.key_type == GROUP_KEY {
                    request.key = self.own(&request.key);
                    for key in &mut request.coordinator_keys {
                        *key = self.own(key);
                    }
                    self.pending.insert(info.correlation_id, (api, version));
                }
                encode(&header, header_version, &request, version)
            }
            ApiKey::JoinGroup => {
                self.group_field::<JoinGroupRequest>(&header, body, version, |r| &mut r.group_id)
            }
            ApiKey::SyncGroup => {
                self.group_field::<SyncGroupRequest>(&header, body, version, |r| &mut r.group_id)
            }
            ApiKey::Heartbeat => {
                self.group_field::<HeartbeatRequest>(&header, body, version, |r| &mut r.group_id)
            }
            ApiKey::LeaveGroup => {
                self.group_field::<LeaveGroupRequest>(&header, body, version, |r| &mut r.group_id)
            }
            ApiKey::OffsetCommit => {
                self.group_field::<OffsetCommitRequest>(&header, body, version, |r| &mut r.group_id)
            }
            ApiKey::TxnOffsetCommit => {
                self.group_field::<TxnOffsetCommitRequest>(&header, body, version, |r| {
                    &mut r.group_id
                })
            }
            ApiKey::ConsumerGroupHeartbeat => {
                self.group_field::<ConsumerGroupHeartbeatRequest>(&header, body, version, |r| {
                    &mut r.group_id
                })
            }
            ApiKey::OffsetFetch => {
                let mut request = decode::<OffsetFetchRequest>(&mut body, version, api, version)?;
                request.group_id = self.own_group(&request.group_id);
                for group in &mut request.groups {
                    group.group_id = self.own_group(&group.group_id);
                }
                self.pending.insert(info.correlation_id, (api, version));
                encode(&header, header_version, &request, version)
            }
            ApiKey::Fetch => {
                self.pending.insert(info.correlation_id, (api, version));
                return Ok(frame);
            }
            ApiKey::Produce => {
                let mut request = decode::<ProduceRequest>(&mut body, version, api, version)?;
                if !self
                    .key_records(&mut request, keys, counted)
                    .map_err(|reason| FrameError::Header {
                        api,
                        version,
                        reason,
                    })?
                {
                    return Ok(frame);
                }
                encode(&header, header_version, &request, version)
            }
            _ => return Ok(frame),
        };
        rewritten.map_err(|reason| FrameError::Header {
            api,
            version,
            reason,
        })
    }

    /// A request whose one group id is `field`.
    fn group_field<T: Decodable + Encodable>(
        &self,
        header: &RequestHeader,
        mut body: Bytes,
        version: i16,
        field: impl FnOnce(&mut T) -> &mut GroupId,
    ) -> Result<Bytes, String> {
        let api =
            ApiKey::try_from(header.request_api_key).map_err(|()| "unknown API".to_owned())?;
        let mut request = T::decode(&mut body, version).map_err(|e| e.to_string())?;
        let group = field(&mut request);
        *group = self.own_group(group);
        encode(
            header,
            api.request_header_version(version),
            &request,
            version,
        )
    }

    /// `frame` (a response) with the group ids it echoes written back.
    /// For a Fetch, only the sandbox's records are kept (counted by topic
    /// into `counted`).
    pub fn response(
        &mut self,
        frame: Bytes,
        keys: &RoutingKeys,
        counted: &mut Vec<(String, Counted)>,
    ) -> Result<Bytes, FrameError> {
        if frame.len() < 8 {
            return Ok(frame);
        }
        let correlation = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
        let Some((api, version)) = self.pending.remove(&correlation) else {
            return Ok(frame);
        };
        let header_version = api.response_header_version(version);
        let mut body = frame.slice(4..);
        let header = decode::<ResponseHeader>(&mut body, header_version, api, version)?;
        let written = match api {
            ApiKey::FindCoordinator => {
                let mut response =
                    decode::<FindCoordinatorResponse>(&mut body, version, api, version)?;
                for coordinator in &mut response.coordinators {
                    coordinator.key = self.theirs(&coordinator.key);
                }
                encode(&header, header_version, &response, version)
            }
            ApiKey::Fetch => {
                let mut response = decode::<FetchResponse>(&mut body, version, api, version)?;
                let changed = self
                    .filter(&mut response, keys, counted)
                    .map_err(|reason| FrameError::Header {
                        api,
                        version,
                        reason,
                    })?;
                if !changed {
                    // Every record carries the key: the broker's bytes as
                    // they are.
                    return Ok(frame);
                }
                encode(&header, header_version, &response, version)
            }
            ApiKey::OffsetFetch => {
                let mut response = decode::<OffsetFetchResponse>(&mut body, version, api, version)?;
                for group in &mut response.groups {
                    group.group_id = GroupId(self.theirs(&group.group_id.0));
                }
                encode(&header, header_version, &response, version)
            }
            _ => return Ok(frame),
        };
        written.map_err(|reason| FrameError::Header {
            api,
            version,
            reason,
        })
    }
}

impl ForkConn {
    /// Gives the records of `request` that carry no routing key this
    /// connection's; whether any changed.
    fn key_records(
        &self,
        request: &mut ProduceRequest,
        keys: &RoutingKeys,
        counted: &mut Vec<(String, Counted)>,
    ) -> Result<bool, String> {
        let keyless = |record: &Record| routing_key(keys, record).is_none();
        let mut changed = false;
        for topic in &mut request.topic_data {
            let mut added = 0;
            for partition in &mut topic.partition_data {
                let Some(bytes) = &partition.records else {
                    continue;
                };
                let (keyed, count) = records::add_baggage(bytes, &self.member, keyless)?;
                if count > 0 {
                    partition.records = Some(keyed);
                    added += count;
                }
            }
            if added > 0 {
                changed = true;
                let name = topic_label(&topic.name, topic.topic_id);
                let count = Counted {
                    keyed: added,
                    ..Counted::default()
                };
                counted.push((name, count));
            }
        }
        Ok(changed)
    }

    /// Keeps, in every partition of `response`, the records that carry
    /// this connection's key; whether any was dropped.
    fn filter(
        &self,
        response: &mut FetchResponse,
        keys: &RoutingKeys,
        counted: &mut Vec<(String, Counted)>,
    ) -> Result<bool, String> {
        let mut changed = false;
        let carries_key =
            |record: &Record| routing_key(keys, record).as_deref() == Some(self.key.as_str());
        for topic in &mut response.responses {
            let name = topic_label(&topic.topic, topic.topic_id);
            let mut total = Counted::default();
            for partition in &mut topic.partitions {
                let Some(bytes) = &partition.records else {
                    continue;
                };
                let (kept, count) = records::filter(bytes, carries_key)?;
                changed |= count.dropped > 0;
                partition.records = Some(kept);
                total.kept += count.kept;
                total.dropped += count.dropped;
            }
            if total != Counted::default() {
                counted.push((name, total));
            }
        }
        Ok(changed)
    }
}

/// The routing key a record's headers carry, read as HTTP's header fields
/// are.
fn routing_key(keys: &RoutingKeys, record: &Record) -> Option<String> {
    let fields = record
        .headers
        .iter()
        .filter_map(|(name, value)| Some((name.as_str().as_bytes(), value.as_deref()?)));
    keys.extract(fields)
}

/// A topic as the metrics name it: by name, or by id where the request's
/// version names topics by id (Fetch v13, Produce v13 and later).
fn topic_label(name: &kafka_protocol::messages::TopicName, id: impl std::fmt::Display) -> String {
    if name.0.is_empty() {
        id.to_string()
    } else {
        name.0.to_string()
    }
}

fn decode<T: Decodable>(
    body: &mut Bytes,
    version: i16,
    api: ApiKey,
    api_version: i16,
) -> Result<T, FrameError> {
    T::decode(body, version).map_err(|e| FrameError::Header {
        api,
        version: api_version,
        reason: e.to_string(),
    })
}

/// A frame of `header` then `message`, size prefix first.
fn encode<H: Encodable, T: Encodable>(
    header: &H,
    header_version: i16,
    message: &T,
    version: i16,
) -> Result<Bytes, String> {
    let size = header
        .compute_size(header_version)
        .map_err(|e| e.to_string())?
        + message.compute_size(version).map_err(|e| e.to_string())?;
    let mut out = BytesMut::with_capacity(4 + size);
    out.put_i32(i32::try_from(size).map_err(|e| e.to_string())?);
    header
        .encode(&mut out, header_version)
        .map_err(|e| e.to_string())?;
    message
        .encode(&mut out, version)
        .map_err(|e| e.to_string())?;
    Ok(out.freeze())
}

#[cfg(test)]
mod tests;
