//! The HTTP `CONNECT` exchange: connect to the proxy, ask for a tunnel to `host:port`,
//! read the answer's head (bounded in size and time) and require a 2xx. What follows on
//! the same socket is the plane's TLS or WebSocket handshake.

use super::{authority, HttpProxy, ProxyError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Largest answer head read from a proxy, bytes.
pub const MAX_RESPONSE_HEAD: usize = 8 * 1024;

impl HttpProxy {
    /// A TCP stream to `host:port` through this proxy, ready for TLS or the WebSocket
    /// upgrade; everything (connect, request, answer) must finish by `deadline`.
    pub async fn open_tunnel(
        &self,
        host: &str,
        port: u16,
        deadline: Instant,
    ) -> Result<TcpStream, ProxyError> {
        let work = async {
            let mut tcp = TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|e| ProxyError::Unreachable {
                    proxy: self.to_string(),
                    detail: e.to_string(),
                })?;
            let _ = tcp.set_nodelay(true);
            self.handshake(&mut tcp, host, port).await?;
            Ok(tcp)
        };
        match tokio::time::timeout_at(deadline, work).await {
            Ok(result) => result,
            Err(_) => Err(ProxyError::Timeout {
                proxy: self.to_string(),
                target: authority(host, port),
            }),
        }
    }

    /// Sends `CONNECT host:port` over `stream` and checks the answer. Reads no byte past
    /// the answer's head: those belong to the tunnel.
    pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: &mut S,
        host: &str,
        port: u16,
    ) -> Result<(), ProxyError> {
        let target = authority(host, port);
        let io = |e: std::io::Error| ProxyError::Io {
            proxy: self.to_string(),
            detail: e.to_string(),
        };
        // Holds the credentials: written to the socket, never logged.
        let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
        if let Some(authorization) = &self.authorization {
            request.push_str("Proxy-Authorization: ");
            request.push_str(authorization.expose());
            request.push_str("\r\n");
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await.map_err(io)?;
        stream.flush().await.map_err(io)?;
        let head = match read_head(stream).await {
            Ok(head) => head,
            Err(HeadError::Io(e)) => return Err(io(e)),
            Err(HeadError::Closed) => {
                return Err(ProxyError::Closed {
                    proxy: self.to_string(),
                    target,
                })
            }
            Err(HeadError::TooLarge) => {
                return Err(ProxyError::TooLarge {
                    proxy: self.to_string(),
                    limit: MAX_RESPONSE_HEAD,
                })
            }
        };
        let (status, reason) = parse_status(&head).map_err(|detail| ProxyError::Malformed {
            proxy: self.to_string(),
            detail,
        })?;
        if !(200..300).contains(&status) {
            return Err(ProxyError::Refused {
                proxy: self.to_string(),
                target,
                status,
                reason,
                sent_credentials: self.authorization.is_some(),
            });
        }
        Ok(())
    }
}

/// Why no complete head was read.
#[derive(Debug)]
pub(super) enum HeadError {
    Io(std::io::Error),
    Closed,
    TooLarge,
}

/// Reads up to and including the blank line that ends the head (`\r\n\r\n`, or `\n\n`
/// from a lax proxy). One byte per read, so nothing after the head is consumed and the
/// stream can be handed on as it is; a proxy answers in a line or three, once per connect.
pub(super) async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Vec<u8>, HeadError> {
    let mut head = Vec::with_capacity(128);
    loop {
        if head.len() == MAX_RESPONSE_HEAD {
            return Err(HeadError::TooLarge);
        }
        let byte = match stream.read_u8().await {
            Ok(byte) => byte,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(HeadError::Closed)
            }
            Err(e) => return Err(HeadError::Io(e)),
        };
        head.push(byte);
        if head.ends_with(b"\r\n\r\n") || head.ends_with(b"\n\n") {
            return Ok(head);
        }
    }
}

/// The status code and reason phrase of an HTTP/1.x answer head.
pub(super) fn parse_status(head: &[u8]) -> Result<(u16, String), String> {
    let line_end = head.iter().position(|b| *b == b'\n').unwrap_or(head.len());
    let line = String::from_utf8_lossy(&head[..line_end]);
    let line = line.trim_end_matches('\r');
    let shown = printable(line);
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    let reason = parts.next().unwrap_or_default().trim();
    if !version.starts_with("HTTP/1.") {
        return Err(format!("status line {shown:?}"));
    }
    let status = match code.parse::<u16>() {
        Ok(status) if code.len() == 3 && (100..600).contains(&status) => status,
        _ => return Err(format!("status line {shown:?}")),
    };
    Ok((status, printable(reason)))
}

/// At most 80 characters of the proxy's text, control characters replaced: it ends up
/// in logs and in `doctor`'s output.
fn printable(text: &str) -> String {
    text.chars()
        .take(80)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}
