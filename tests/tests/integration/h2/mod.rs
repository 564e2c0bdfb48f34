//! HTTP/2: h2c with curl and nghttpd, gRPC with grpcio peers (per-stream
//! steering, streams that outlive routes), what crosses the proxy exactly
//! as sent, and hostile HTTP/2 clients.

mod faithful;
mod grpc;
mod h2c;
mod hostile;
