//! The fake API server's state, with no I/O: objects per resource keyed by
//! namespace/name, one global resourceVersion counter stamped into every
//! write, and the log of changes that watches replay. "Compaction" drops
//! the log and makes every earlier version too old to watch from, which is
//! what forces a real client to re-list.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{
    kinds::{Kind, kind_named},
    selector::Selector,
};

/// Which objects a list or watch wants.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// `None`: all namespaces.
    pub namespace: Option<String>,
    pub selector: Selector,
}

impl Filter {
    fn matches(&self, object: &Value) -> bool {
        let namespace = object["metadata"]["namespace"].as_str();
        self.namespace
            .as_deref()
            .is_none_or(|ns| namespace == Some(ns))
            && self.selector.matches(object)
    }
}

/// One write, as watches replay it.
#[derive(Debug)]
struct Change {
    rv: u64,
    resource: &'static str,
    old: Option<Value>,
    /// The object after the write; for a delete, its last state.
    new: Value,
    deleted: bool,
}

#[derive(Debug, Default)]
pub struct Store {
    rv: u64,
    next_uid: u64,
    /// resource -> (namespace, name) -> object.
    objects: BTreeMap<&'static str, BTreeMap<(String, String), Value>>,
    log: Vec<Change>,
    /// Versions below this are too old to watch from (410 Gone).
    compacted: u64,
    /// Bumped by [`Store::expire`]: open watches end when it changes.
    pub epoch: u64,
}

impl Store {
    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// Creates or replaces an object; returns it as stored.
    pub fn apply(&mut self, mut object: Value) -> Result<Value, String> {
        let kind = object["kind"]
            .as_str()
            .and_then(kind_named)
            .ok_or_else(|| format!("the fake API server does not serve kind {}", object["kind"]))?;
        let name = object["metadata"]["name"]
            .as_str()
            .ok_or("metadata.name is required")?
            .to_owned();
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_owned();
        self.rv += 1;
        let key = (namespace.clone(), name);
        let old = self
            .objects
            .entry(kind.resource)
            .or_default()
            .get(&key)
            .cloned();
        let (uid, created) = match &old {
            Some(old) => (
                old["metadata"]["uid"].clone(),
                old["metadata"]["creationTimestamp"].clone(),
            ),
            None => {
                self.next_uid += 1;
                (
                    json!(format!("00000000-0000-4000-8000-{:012x}", self.next_uid)),
                    json!(rfc3339_now()),
                )
            }
        };
        object["apiVersion"] = json!(kind.api_version);
        let metadata = &mut object["metadata"];
        metadata["namespace"] = json!(namespace);
        metadata["uid"] = uid;
        metadata["creationTimestamp"] = created;
        metadata["resourceVersion"] = json!(self.rv.to_string());
        self.objects
            .entry(kind.resource)
            .or_default()
            .insert(key, object.clone());
        self.log.push(Change {
            rv: self.rv,
            resource: kind.resource,
            old,
            new: object.clone(),
            deleted: false,
        });
        Ok(object)
    }

    /// Deletes an object; returns its last state, or `None` if there was none.
    pub fn delete(&mut self, kind: &Kind, namespace: &str, name: &str) -> Option<Value> {
        let key = (namespace.to_owned(), name.to_owned());
        let mut object = self.objects.get_mut(kind.resource)?.remove(&key)?;
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.log.push(Change {
            rv: self.rv,
            resource: kind.resource,
            old: None,
            new: object.clone(),
            deleted: true,
        });
        Some(object)
    }

    /// Compacts: forgets the change log and makes every version so far too
    /// old, so that a client resuming a watch must re-list. Open watches end.
    pub fn expire(&mut self) {
        self.rv += 1;
        self.compacted = self.rv;
        self.log.clear();
        self.epoch += 1;
    }

    /// Whether a watch may resume from `rv`.
    pub fn too_old(&self, rv: u64) -> bool {
        rv < self.compacted
    }

    /// One object.
    pub fn get(&self, kind: &Kind, namespace: &str, name: &str) -> Option<Value> {
        let key = (namespace.to_owned(), name.to_owned());
        let object = self.objects.get(kind.resource)?.get(&key)?;
        Some(object.clone())
    }

    /// The objects matching `filter`, in namespace/name order, as stored
    /// (with `kind` and `apiVersion`, as watch events carry them).
    pub fn matching(&self, kind: &Kind, filter: &Filter) -> Vec<Value> {
        let objects = self
            .objects
            .get(kind.resource)
            .into_iter()
            .flat_map(|m| m.values());
        objects
            .filter(|object| filter.matches(object))
            .cloned()
            .collect()
    }

    /// A `<Kind>List` response. As the real server sends them, items of
    /// built-in kinds carry no `kind`/`apiVersion`.
    pub fn list(&self, kind: &Kind, filter: &Filter) -> Value {
        let mut items = self.matching(kind, filter);
        if kind.builtin {
            for item in items.iter_mut().filter_map(Value::as_object_mut) {
                item.remove("kind");
                item.remove("apiVersion");
            }
        }
        json!({
            "kind": format!("{}List", kind.kind),
            "apiVersion": kind.api_version,
            "metadata": {"resourceVersion": self.rv.to_string()},
            "items": items,
        })
    }

    /// The watch events after `cursor` for `kind`, and the cursor to resume
    /// from. An object that starts (stops) matching the filter is ADDED
    /// (DELETED), as with the real server's label-selector watches.
    pub fn events_after(&self, kind: &Kind, filter: &Filter, cursor: u64) -> (Vec<Value>, u64) {
        let start = self.log.partition_point(|change| change.rv <= cursor);
        let events = self.log[start..]
            .iter()
            .filter(|change| change.resource == kind.resource)
            .filter_map(|change| {
                let was = change.old.as_ref().is_some_and(|old| filter.matches(old));
                let is = filter.matches(&change.new);
                let event = match (change.deleted, was, is) {
                    (true, _, true) | (false, true, false) => "DELETED",
                    (false, true, true) => "MODIFIED",
                    (false, false, true) => "ADDED",
                    _ => return None,
                };
                Some(json!({"type": event, "object": change.new}))
            })
            .collect();
        (events, cursor.max(self.rv))
    }
}

/// The `ERROR` event a watch from a compacted version gets.
pub fn expired_event() -> Value {
    json!({"type": "ERROR", "object": status(410, "Expired", "too old resource version")})
}

/// A `Status` object, as the API server returns for errors.
pub fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

/// Now, as `2006-01-02T15:04:05Z` (UTC, whole seconds).
fn rfc3339_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let (era, doe) = (z / 146_097, z % 146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}
