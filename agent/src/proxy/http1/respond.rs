//! Writing the proxy's own answer on an HTTP/1 connection: the response of
//! [`ProxyError::http1_response`], then the connection closes.

use tokio::io::AsyncWriteExt;

use crate::proxy::error::ProxyError;

/// Writes the response; failures are ignored (the connection closes anyway).
pub async fn send<W: tokio::io::AsyncWrite + Unpin>(client: &mut W, error: ProxyError) {
    let _ = client.write_all(&error.http1_response()).await;
    let _ = client.shutdown().await;
}
