//! Exchanges over real loopback sockets: what the upstream receives and what
//! the client gets back, for a request whose `Connection: close` is left out,
//! including its retry after a stale reused connection.

use std::time::Duration;

use bytes::BytesMut;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use super::{Forwarded, Outcome, run};
use crate::http::head::{FieldLines, RequestHead, parse_request};

const TIMEOUT: Duration = Duration::from_secs(5);

/// Two ends of one loopback TCP connection.
async fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("local address");
    let (connected, accepted) = tokio::join!(TcpStream::connect(address), listener.accept());
    (connected.expect("connect"), accepted.expect("accept").0)
}

fn head(raw: &[u8]) -> RequestHead {
    match parse_request(raw, &mut FieldLines::default()) {
        Ok(Some(parsed)) => parsed.head,
        other => panic!("expected a complete request, got {other:?}"),
    }
}

/// Serves one exchange on `server`: reads a head, answers `response`, and
/// returns the head it read.
async fn answer(mut server: TcpStream, response: &'static [u8]) -> Vec<u8> {
    let mut received = Vec::new();
    let mut chunk = [0u8; 1024];
    while !received.ends_with(b"\r\n\r\n") {
        let n = server.read(&mut chunk).await.expect("upstream read");
        assert!(n > 0, "the proxy closed before a whole head: {received:?}");
        received.extend_from_slice(&chunk[..n]);
    }
    server.write_all(response).await.expect("upstream write");
    received
}

/// Runs `request` against an upstream answering `response`; returns the
/// outcome, what the upstream received and what the client got.
async fn exchange(request: &[u8], response: &'static [u8]) -> (Outcome, Vec<u8>, Vec<u8>) {
    exchange_adding(request, b"", response).await
}

/// [`exchange`], with `added` field lines at the end of the forwarded head.
async fn exchange_adding(
    request: &[u8],
    added: &[u8],
    response: &'static [u8],
) -> (Outcome, Vec<u8>, Vec<u8>) {
    let head = head(request);
    let (mut client, mut client_peer) = pair().await;
    let (mut upstream, server) = pair().await;
    let mut buf = BytesMut::from(request);
    let mut ubuf = BytesMut::new();
    let served = tokio::spawn(answer(server, response));
    let outcome = run(
        &mut client,
        &mut buf,
        &mut upstream,
        &mut ubuf,
        Forwarded { head: &head, added },
        false,
        TIMEOUT,
    )
    .await;
    let received = served.await.expect("upstream task");
    drop(client);
    let mut got = Vec::new();
    client_peer
        .read_to_end(&mut got)
        .await
        .expect("client read");
    assert!(buf.is_empty(), "the request was consumed");
    (outcome, received, got)
}

#[tokio::test]
async fn connection_close_is_left_out_and_the_client_is_told_close() {
    let (outcome, received, got) = exchange(
        b"GET /a HTTP/1.1\r\nHost: r\r\nConnection: close\r\nbaggage: k=v\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    )
    .await;
    assert_eq!(
        String::from_utf8_lossy(&received),
        "GET /a HTTP/1.1\r\nHost: r\r\nbaggage: k=v\r\n\r\n"
    );
    assert_eq!(
        String::from_utf8_lossy(&got),
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    );
    assert!(
        matches!(
            outcome,
            Outcome::Done {
                status: 200,
                keep_client: false,
                reuse_upstream: true
            }
        ),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_response_saying_close_already_is_relayed_as_is() {
    let response = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok";
    let (outcome, _, got) = exchange(
        b"GET /a HTTP/1.1\r\nHost: r\r\nConnection: close\r\n\r\n",
        response,
    )
    .await;
    assert_eq!(got, response);
    assert!(
        matches!(
            outcome,
            Outcome::Done {
                keep_client: false,
                reuse_upstream: false,
                ..
            }
        ),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn other_connection_options_go_byte_for_byte_both_ways() {
    let request = b"GET /a HTTP/1.1\r\nHost: r\r\nConnection: close, x-foo\r\nx-foo: 1\r\n\r\n";
    let response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    let (outcome, received, got) = exchange(request, response).await;
    assert_eq!(received, request);
    assert_eq!(got, response);
    assert!(
        matches!(
            outcome,
            Outcome::Done {
                keep_client: false,
                ..
            }
        ),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_stale_reused_connection_is_retried_without_the_connection_line() {
    let request = b"GET /a HTTP/1.1\r\nConnection: close\r\nHost: r\r\n\r\n";
    let head = head(request);
    let (mut client, mut client_peer) = pair().await;
    let mut buf = BytesMut::from(&request[..]);
    let mut ubuf = BytesMut::new();

    // A pooled connection whose server has gone: the exchange asks for a retry
    // and keeps the whole request in `buf`.
    let (mut stale, server) = pair().await;
    drop(server);
    let outcome = run(
        &mut client,
        &mut buf,
        &mut stale,
        &mut ubuf,
        Forwarded {
            head: &head,
            added: &[],
        },
        true,
        TIMEOUT,
    )
    .await;
    assert!(matches!(outcome, Outcome::Retry), "{outcome:?}");
    assert_eq!(&buf[..], request);

    let (mut fresh, server) = pair().await;
    let served = tokio::spawn(answer(server, b"HTTP/1.1 204 No Content\r\n\r\n"));
    ubuf.clear();
    let outcome = run(
        &mut client,
        &mut buf,
        &mut fresh,
        &mut ubuf,
        Forwarded {
            head: &head,
            added: &[],
        },
        false,
        TIMEOUT,
    )
    .await;
    assert!(
        matches!(
            outcome,
            Outcome::Done {
                status: 204,
                keep_client: false,
                reuse_upstream: true
            }
        ),
        "{outcome:?}"
    );
    assert_eq!(
        String::from_utf8_lossy(&served.await.expect("upstream task")),
        "GET /a HTTP/1.1\r\nHost: r\r\n\r\n"
    );
    drop(client);
    let mut got = Vec::new();
    client_peer
        .read_to_end(&mut got)
        .await
        .expect("client read");
    assert_eq!(
        String::from_utf8_lossy(&got),
        "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"
    );
}

/// A response already waiting when the exchange starts (the proxy's task was
/// descheduled between writing the head and reading): for a request without
/// a body, the client connection must stay open. Before the body-first
/// `select!`, either branch could win this race, and a lost one closed the
/// keep-alive client after its response.
#[tokio::test]
async fn a_response_that_is_already_there_keeps_a_bodiless_request_alive() {
    const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    let request = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    for attempt in 0..32 {
        let head = head(request);
        let (mut client, _client_peer) = pair().await;
        let (mut upstream, mut server) = pair().await;
        server.write_all(RESPONSE).await.expect("upstream write");
        // Let the response reach the proxy's socket before the exchange.
        tokio::time::sleep(Duration::from_millis(2)).await;
        let mut buf = BytesMut::from(&request[..]);
        let mut ubuf = BytesMut::new();
        let outcome = run(
            &mut client,
            &mut buf,
            &mut upstream,
            &mut ubuf,
            Forwarded {
                head: &head,
                added: &[],
            },
            false,
            TIMEOUT,
        )
        .await;
        assert!(
            matches!(
                outcome,
                Outcome::Done {
                    status: 200,
                    keep_client: true,
                    reuse_upstream: true,
                }
            ),
            "attempt {attempt}: {outcome:?}"
        );
    }
}

#[tokio::test]
async fn an_added_field_line_ends_the_forwarded_head_and_the_rest_is_as_received() {
    let request = b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\nBaggage: other=1\r\n\r\n";
    let (_, received, _) = exchange_adding(
        request,
        b"baggage: detour-routing-key=feature-x\r\n",
        b"HTTP/1.1 204 No Content\r\n\r\n",
    )
    .await;
    assert_eq!(
        String::from_utf8_lossy(&received),
        "GET /a HTTP/1.1\r\nHost: x\r\nBaggage: other=1\r\n\
         baggage: detour-routing-key=feature-x\r\n\r\n",
        "the lone Connection: close left out, the member added last"
    );
}
