//! A small HTTP/1.1 client for the agent's admin socket (hyper's client
//! connection over a Unix stream), blocking for the caller: each verb makes
//! one request on its own connection.
//!
//! Every way of failing to reach the agent becomes one [`ClientError`] whose
//! message names the cause and the next step, and whose exit code is the
//! documented one (see `output.rs`).

use std::{io::ErrorKind, ops::ControlFlow, path::PathBuf, time::Duration};

use anyhow::Context;
use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode, body::Incoming, header};
use hyper_util::rt::TokioIo;
use serde::{Serialize, de::DeserializeOwned};
use tokio::net::UnixStream;

use super::exit;
use crate::admin::api;

/// How long a request (not a trace stream) may take.
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "agent not running: no socket at {path} (start it with `detour agent ...`, or pass --socket)"
    )]
    NoSocket { path: PathBuf },
    #[error(
        "agent not running: {path} is a stale socket with no agent behind it (start it with `detour agent ...`)"
    )]
    Stale { path: PathBuf },
    #[error("{path} is not a socket: pass the agent's --admin-socket path with --socket")]
    NotASocket { path: PathBuf },
    #[error("permission denied on {path}: run as root")]
    Permission { path: PathBuf },
    #[error("the agent at {path} did not answer within {}s: check its logs", TIMEOUT.as_secs())]
    Timeout { path: PathBuf },
    #[error("cannot reach the agent at {path}")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("lost the connection to the agent at {path} (did it stop?)")]
    Http {
        path: PathBuf,
        #[source]
        source: hyper::Error,
    },
    /// The agent answered with an error; its message says what to do.
    #[error("{message}")]
    Api { status: u16, message: String },
    #[error(
        "unexpected answer from the agent at {path}: {detail} (are the CLI and the agent the same version? see `detour version`)"
    )]
    BadAnswer { path: PathBuf, detail: String },
}

impl ClientError {
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::NoSocket { .. }
            | Self::Stale { .. }
            | Self::NotASocket { .. }
            | Self::Timeout { .. }
            | Self::Connect { .. } => exit::UNREACHABLE,
            Self::Permission { .. } => exit::PERMISSION,
            Self::Api { status: 400, .. } => exit::USAGE,
            Self::Api { status: 404, .. } => exit::NOT_FOUND,
            Self::Http { .. } | Self::Api { .. } | Self::BadAnswer { .. } => exit::FAILURE,
        }
    }
}

/// The admin API at one socket.
#[derive(Debug)]
pub struct Client {
    socket: PathBuf,
    runtime: tokio::runtime::Runtime,
}

impl Client {
    pub fn new(socket: PathBuf) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        Ok(Self { socket, runtime })
    }

    /// `GET path` and decode the JSON answer.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(Method::GET, path, None)
    }

    /// `method path` with a JSON body, and decode the JSON answer.
    pub fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_vec(body).map_err(|e| self.bad_answer(e.to_string()))?;
        self.call(method, path, Some(body))
    }

    fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ClientError> {
        let bytes = self.runtime.block_on(async {
            tokio::time::timeout(TIMEOUT, async {
                let response = self.request(method, path, body).await?;
                response
                    .into_body()
                    .collect()
                    .await
                    .map(|collected| collected.to_bytes())
                    .map_err(|source| self.http_error(source))
            })
            .await
            .map_err(|_| ClientError::Timeout {
                path: self.socket.clone(),
            })?
        })?;
        serde_json::from_slice(&bytes).map_err(|e| self.bad_answer(e.to_string()))
    }

    /// `GET path` as a stream of lines: `line` is called with each complete
    /// line until it breaks or the agent ends the stream. `opened` is called
    /// once the agent has accepted the request (the stream is live).
    pub fn lines(
        &self,
        path: &str,
        opened: impl FnOnce() -> anyhow::Result<()>,
        mut line: impl FnMut(&[u8]) -> anyhow::Result<ControlFlow<()>>,
    ) -> anyhow::Result<ControlFlow<()>> {
        self.runtime.block_on(async {
            let response = tokio::time::timeout(TIMEOUT, self.request(Method::GET, path, None))
                .await
                .map_err(|_| ClientError::Timeout {
                    path: self.socket.clone(),
                })??;
            opened()?;
            let mut body = response.into_body();
            let mut buffer = BytesMut::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|source| self.http_error(source))?;
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                buffer.extend_from_slice(&data);
                while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                    let next = buffer.split_to(end + 1);
                    if line(&next[..end])?.is_break() {
                        return Ok(ControlFlow::Break(()));
                    }
                }
            }
            Ok(ControlFlow::Continue(()))
        })
    }

    /// Connects, sends one request, and returns a 2xx response; an error
    /// answer becomes [`ClientError::Api`].
    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<hyper::Response<Incoming>, ClientError> {
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|e| self.connect_error(e))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream))
                .await
                .map_err(|source| self.http_error(source))?;
        tokio::spawn(async move {
            // Ends with the response (or the trace stream); nothing to report.
            let _ = connection.await;
        });
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "detour");
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| self.bad_answer(format!("cannot build request {path}: {e}")))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|source| self.http_error(source))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let bytes = response
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let message = serde_json::from_slice::<api::ApiError>(&bytes)
            .map(|e| e.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).trim().to_owned());
        Err(api_error(status, message))
    }

    fn connect_error(&self, source: std::io::Error) -> ClientError {
        let path = self.socket.clone();
        match source.kind() {
            ErrorKind::NotFound | ErrorKind::NotADirectory => ClientError::NoSocket { path },
            ErrorKind::PermissionDenied => ClientError::Permission { path },
            ErrorKind::ConnectionRefused => {
                // Connecting to a file that is not a socket is refused too.
                let is_socket = std::fs::symlink_metadata(&path)
                    .map(|meta| std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()));
                match is_socket {
                    Ok(false) => ClientError::NotASocket { path },
                    _ => ClientError::Stale { path },
                }
            }
            _ => ClientError::Connect { path, source },
        }
    }

    fn http_error(&self, source: hyper::Error) -> ClientError {
        ClientError::Http {
            path: self.socket.clone(),
            source,
        }
    }

    fn bad_answer(&self, detail: String) -> ClientError {
        ClientError::BadAnswer {
            path: self.socket.clone(),
            detail,
        }
    }
}

fn api_error(status: StatusCode, message: String) -> ClientError {
    let message = match status {
        StatusCode::BAD_REQUEST => format!("the agent refused the request: {message}"),
        StatusCode::NOT_FOUND => message,
        _ => format!("the agent failed ({status}): {message}"),
    };
    ClientError::Api {
        status: status.as_u16(),
        message,
    }
}

/// `path?name=value&...`, leaving out absent values.
pub fn with_query(path: &str, pairs: &[(&str, Option<&str>)]) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (name, value) in pairs {
        if let Some(value) = value {
            query.append_pair(name, value);
        }
    }
    let query = query.finish();
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    }
}
