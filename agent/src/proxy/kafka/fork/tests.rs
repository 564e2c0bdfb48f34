//! The group rewrite on frames the crate encodes, as clients send them.

use kafka_protocol::messages::find_coordinator_response::Coordinator;

use super::*;

fn frame<H: Encodable, T: Encodable>(header: &H, hv: i16, message: &T, v: i16) -> Bytes {
    encode(header, hv, message, v).expect("encodes")
}

#[test]
fn a_group_key_is_the_forks_own_going_out_and_the_clients_coming_back() {
    let mut groups = ForkConn::new("shop/feature-x", "feature-x", "k=feature-x".to_owned());
    let version = 4;
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::FindCoordinator as i16)
        .with_request_api_version(version)
        .with_correlation_id(9);
    let request = FindCoordinatorRequest::default()
        .with_key_type(GROUP_KEY)
        .with_coordinator_keys(vec![StrBytes::from_static_str("billing")]);
    let header_version = ApiKey::FindCoordinator.request_header_version(version);
    let sent = frame(&header, header_version, &request, version);
    let info = super::super::frame::request_info(&sent).expect("a request");
    let keys = RoutingKeys::new(&["detour-routing-key".to_owned()], &[]).expect("keys");
    let rewritten = groups
        .request(&info, sent, &keys, &mut Vec::new())
        .expect("rewritten");
    let mut body = rewritten.slice(4..);
    RequestHeader::decode(&mut body, header_version).expect("header");
    let out = FindCoordinatorRequest::decode(&mut body, version).expect("body");
    assert_eq!(
        out.coordinator_keys[0].as_str(),
        "billing.detour-shop.feature-x"
    );

    let response = FindCoordinatorResponse::default().with_coordinators(vec![
        Coordinator::default().with_key(out.coordinator_keys[0].clone()),
    ]);
    let response_version = ApiKey::FindCoordinator.response_header_version(version);
    let answer = frame(
        &ResponseHeader::default().with_correlation_id(9),
        response_version,
        &response,
        version,
    );
    let back = groups
        .response(answer, &keys, &mut Vec::new())
        .expect("written back");
    let mut body = back.slice(4..);
    ResponseHeader::decode(&mut body, response_version).expect("header");
    let back = FindCoordinatorResponse::decode(&mut body, version).expect("body");
    assert_eq!(back.coordinators[0].key.as_str(), "billing");
}

#[test]
fn other_requests_and_transactional_keys_pass_unchanged() {
    let mut groups = ForkConn::new("feature-x", "feature-x", "k=feature-x".to_owned());
    let version = 4;
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::FindCoordinator as i16)
        .with_request_api_version(version);
    // Key type 1: a transactional id, not a group.
    let request = FindCoordinatorRequest::default()
        .with_key_type(1)
        .with_coordinator_keys(vec![StrBytes::from_static_str("txn")]);
    let header_version = ApiKey::FindCoordinator.request_header_version(version);
    let sent = frame(&header, header_version, &request, version);
    let info = super::super::frame::request_info(&sent).expect("a request");
    let keys = RoutingKeys::new(&["detour-routing-key".to_owned()], &[]).expect("keys");
    let unchanged = groups.request(&info, sent.clone(), &keys, &mut Vec::new());
    assert_eq!(unchanged.expect("as is"), sent);
}
