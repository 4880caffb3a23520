//! The bench's own HTTP/1.1 client: one keep-alive connection per virtual
//! client, requests written and answers read without any pooling layer in
//! between, so what is measured is the server and the loopback.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::{SendRequest, handshake};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// One keep-alive connection.
pub struct Connection {
    addr: SocketAddr,
    sender: SendRequest<Full<Bytes>>,
}

impl Connection {
    pub async fn open(addr: SocketAddr) -> Result<Connection> {
        let stream = TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true).context("setting TCP_NODELAY")?;
        let (sender, connection) = handshake(TokioIo::new(stream)).await.context("HTTP/1.1 handshake")?;
        tokio::spawn(async move {
            // The connection ends when the server closes it or the sender is dropped.
            let _ = connection.await;
        });
        Ok(Connection { addr, sender })
    }

    /// Sends one request and reads the whole answer. A broken connection is
    /// reopened once, so a server restart costs one error, not the run.
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Bytes>,
    ) -> Result<(StatusCode, Bytes)> {
        self.request_with(method, path, token, &[], body).await
    }

    /// A request with extra headers (an `Idempotency-Key`, say).
    pub async fn request_with(
        &mut self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Bytes>,
    ) -> Result<(StatusCode, Bytes)> {
        if self.sender.ready().await.is_err() {
            *self = Connection::open(self.addr).await?;
        }
        let mut request = Request::builder().method(method).uri(path).header("host", "hongbao");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(body.unwrap_or_default())).context("building a request")?;
        let response = self.sender.send_request(request).await.context("sending a request")?;
        let status = response.status();
        let body = response.into_body().collect().await.context("reading an answer")?.to_bytes();
        Ok((status, body))
    }
}
