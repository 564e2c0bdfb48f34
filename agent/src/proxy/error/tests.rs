//! Each proxy error in each protocol's encoding.

use super::*;

#[test]
fn http1_responses_name_their_reason_and_close() {
    let response = String::from_utf8(ProxyError::UpstreamTimeout.http1_response()).expect("ascii");
    assert_eq!(
        response,
        "HTTP/1.1 504 Gateway Timeout\r\ncontent-type: text/plain\r\ncontent-length: 43\r\n\
         connection: close\r\ndetour-error: upstream-timeout\r\n\r\n\
         detour: Gateway Timeout (upstream-timeout)\n"
    );
    let response =
        String::from_utf8(ProxyError::BadRequest("bad-framing").http1_response()).expect("ascii");
    assert!(
        response.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{response}"
    );
    assert!(
        response.contains("\r\ndetour-error: bad-framing\r\n"),
        "{response}"
    );
}

#[test]
fn grpc_requests_get_a_trailers_only_status() {
    for (error, code) in [
        (ProxyError::UpstreamConnect, "14"),
        (ProxyError::UpstreamTimeout, "4"),
        (ProxyError::BadUpstreamResponse, "13"),
    ] {
        let (head, body) = error.h2_response(true);
        assert_eq!(head.status(), StatusCode::OK, "{error:?}");
        assert!(body.is_empty(), "trailers-only: no body");
        let header = |name: &str| head.headers().get(name).and_then(|v| v.to_str().ok());
        assert_eq!(header("grpc-status"), Some(code), "{error:?}");
        assert_eq!(header("content-type"), Some("application/grpc"));
        assert_eq!(header("detour-error"), Some(error.reason()));
        assert!(header("grpc-message").is_some_and(|m| !m.contains('%')));
    }
}

#[test]
fn other_http2_requests_get_the_http1_status() {
    let (head, body) = ProxyError::UpstreamConnect.h2_response(false);
    assert_eq!(head.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(
        head.headers()
            .get("detour-error")
            .map(HeaderValue::as_bytes),
        Some(&b"upstream-connect"[..])
    );
    assert_eq!(body, "detour: Bad Gateway (upstream-connect)\n");
    assert_eq!(
        ProxyError::UpstreamTimeout.h2_response(false).0.status(),
        StatusCode::GATEWAY_TIMEOUT
    );
}

#[test]
fn an_upstream_connect_failure_is_a_bad_gateway_and_a_timeout_a_gateway_timeout() {
    let refused = UpstreamError::Connect(std::io::ErrorKind::ConnectionRefused.into());
    assert_eq!(ProxyError::from(refused), ProxyError::UpstreamConnect);
    let timeout = UpstreamError::Timeout(std::time::Duration::from_secs(1));
    assert_eq!(ProxyError::from(timeout), ProxyError::UpstreamTimeout);
}
