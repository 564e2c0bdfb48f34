//! The routes file (`detour::routes::RoutesFile::parse`) and the snapshot
//! built from it: no panic on any text, errors a user can read, and a valid
//! file steers exactly what it lists and routes keys only where it says.
//!
//! The file is the one input an operator writes by hand and the agent reloads
//! while it runs, so a panic here would take the node's steering down, and a
//! snapshot that disagrees with its file would send requests somewhere
//! nobody configured. For any UTF-8 input:
//! - parsing is deterministic, and an error has a message that starts with
//!   `routes file` (and an `Invalid` one names its field);
//! - a valid file's snapshot has one service per listed service, ids never 0
//!   and stable when built again with the same `ServiceIds`;
//! - its destinations are exactly the file's `address:port` pairs, and each
//!   `STEERED` map entry stands for one of them and names its service, read
//!   back the way the proxy reads a record (so the proxy finds the service
//!   and protocol of every connection the kernel redirects);
//! - a sandbox's key sends each service it forks to one of that fork's
//!   endpoints (or to baseline, as a fallback, when it has none), a route
//!   group's key to the first member that forks the service, and a key the
//!   file does not name to baseline.

#![no_main]

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
};

use detour::routes::{Decision, RouteInput, RouteSnapshot, RoutesError, RoutesFile, ServiceIds};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let parsed = RoutesFile::parse(text);
    let again = RoutesFile::parse(text);
    let file = match (parsed, again) {
        (Err(error), Err(again)) => {
            check_error(&error);
            assert_eq!(error.to_string(), again.to_string(), "not deterministic");
            return;
        }
        (Ok(file), Ok(_)) => file,
        (first, second) => panic!("not deterministic: {first:?} then {second:?}"),
    };
    let input = RouteInput::from(&file);
    let mut ids = ServiceIds::default();
    let snapshot = RouteSnapshot::build(&input, &mut ids);
    check_destinations(&file, &snapshot);
    check_decisions(&file, &snapshot);

    let rebuilt = RouteSnapshot::build(&input, &mut ids);
    assert_eq!(
        rebuilt.services, snapshot.services,
        "service ids changed on a rebuild"
    );
});

fn check_error(error: &RoutesError) {
    let message = error.to_string();
    assert!(
        message.starts_with("routes file") && message.len() > "routes file: ".len(),
        "unhelpful error {message:?}"
    );
    if let RoutesError::Invalid { field, reason, .. } = error {
        assert!(
            !field.is_empty() && !reason.is_empty(),
            "error without a field or reason: {message:?}"
        );
    }
}

fn check_destinations(file: &RoutesFile, snapshot: &RouteSnapshot) {
    assert_eq!(snapshot.services.len(), file.services.len(), "services");
    assert!(!snapshot.services.contains_key(&0), "service id 0");
    let mut listed = BTreeMap::new();
    for service in &file.services {
        let label = format!("{}/{}", service.namespace, service.name);
        let id = snapshot
            .service_named(&label)
            .unwrap_or_else(|| panic!("{label} missing from the snapshot"))
            .id;
        for port in &service.ports {
            for address in &service.addresses {
                let dst = SocketAddr::new(*address, port.port);
                assert!(
                    listed.insert(dst, (id, port.protocol)).is_none(),
                    "{dst} accepted twice"
                );
            }
        }
    }
    let built: BTreeMap<SocketAddr, _> = snapshot
        .destinations
        .iter()
        .map(|(dst, d)| (*dst, (d.service_id, d.protocol)))
        .collect();
    assert_eq!(built, listed, "snapshot destinations differ from the file");

    let entries = snapshot.steered_entries();
    assert_eq!(entries.len(), listed.len(), "STEERED entries merged");
    for (key, steered) in &entries {
        // What the proxy does with a record: `socket_addr()`, then a lookup.
        let dst = key.socket_addr();
        let (id, _) = listed
            .get(&dst)
            .unwrap_or_else(|| panic!("STEERED entry {dst} is not in the file"));
        assert_eq!(steered.service_id, *id, "STEERED names another service");
    }
}

fn check_decisions(file: &RoutesFile, snapshot: &RouteSnapshot) {
    let named: BTreeSet<&str> = file
        .sandboxes
        .iter()
        .map(|s| s.routing_key.as_str())
        .chain(file.route_groups.iter().map(|g| g.routing_key.as_str()))
        .collect();
    let unknown = (0..)
        .map(|n| format!("not-in-the-file-{n}"))
        .find(|key| !named.contains(key.as_str()))
        .unwrap_or_default();
    for service in snapshot.services.values() {
        let label = service.label.as_ref();
        let ports: BTreeSet<u16> = snapshot
            .destinations
            .iter()
            .filter(|(_, d)| d.service_id == service.id)
            .map(|(dst, _)| dst.port())
            .collect();
        // The endpoints `sandbox` lists for this service; `None` when it
        // does not fork it.
        let fork = |sandbox: &str| -> Option<Vec<SocketAddr>> {
            let spec = file.sandboxes.iter().find(|s| s.name == sandbox)?;
            let forks: Vec<_> = spec.forks.iter().filter(|f| f.service == label).collect();
            (!forks.is_empty()).then(|| {
                forks
                    .iter()
                    .flat_map(|f| f.endpoints.iter().copied())
                    .collect()
            })
        };
        let expect = |key: &str, sandbox: Option<&str>| {
            let target = sandbox.and_then(|s| Some((s, fork(s)?)));
            for port in &ports {
                let decision = snapshot.decide(service.id, *port, Some(key));
                match (&target, &decision) {
                    (None, Decision::Baseline { .. }) => {}
                    (Some((name, endpoints)), Decision::Fork { sandbox, endpoint })
                        if **sandbox == **name && endpoints.contains(endpoint) => {}
                    (Some((name, endpoints)), Decision::ForkNotReady { sandbox })
                        if endpoints.is_empty() && **sandbox == **name => {}
                    _ => panic!(
                        "{label}:{port} with key {key:?}: expected {target:?}, got {decision:?}"
                    ),
                }
            }
        };
        for sandbox in &file.sandboxes {
            expect(&sandbox.routing_key, Some(&sandbox.name));
        }
        for group in &file.route_groups {
            let first = group
                .sandboxes
                .iter()
                .find(|member| fork(member).is_some())
                .map(String::as_str);
            expect(&group.routing_key, first);
        }
        expect(&unknown, None);
    }
}
