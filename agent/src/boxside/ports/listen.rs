//! Whether an applied port really serves the buyer: a proxy handshake with the buyer's
//! credentials against the box itself (no internet needed), on the HTTP port (`CONNECT`
//! with `Proxy-Authorization`; a 407 means the credentials were refused, any other answer
//! that they were taken) and the SOCKS5 port (RFC 1929 username/password; status 0). The
//! tunnel is never used: nothing leaves the box, a few bytes count on its meter.

use super::Want;
use base64::Engine;
use farmhand_protocol::{CommandError, CommandErrorCode};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

/// One handshake's deadline.
const STEP: Duration = Duration::from_secs(3);
/// Where the test `CONNECT` points: the box's own discard port (it is never reached).
const CONNECT_TARGET: &str = "127.0.0.1:9";

/// What a handshake found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    /// The proxy took the credentials.
    Accepted,
    /// The proxy answered and refused them.
    Rejected,
    /// Nothing listens there (yet), or it closed without a word.
    NotListening,
}

/// Which proxy a port is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The HTTP proxy port.
    Http,
    /// The SOCKS5 port.
    Socks,
}

/// One handshake with `host:port` as `login`/`password`.
pub async fn handshake(
    host: &str,
    port: u16,
    kind: Kind,
    login: &str,
    password: &str,
) -> Handshake {
    let attempt = async {
        let mut stream = TcpStream::connect((host, port)).await?;
        match kind {
            Kind::Http => http(&mut stream, login, password).await,
            Kind::Socks => socks(&mut stream, login, password).await,
        }
    };
    match timeout(STEP, attempt).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(_)) | Err(_) => Handshake::NotListening,
    }
}

async fn http(stream: &mut TcpStream, login: &str, password: &str) -> std::io::Result<Handshake> {
    let credentials =
        base64::engine::general_purpose::STANDARD.encode(format!("{login}:{password}"));
    let request = format!(
        "CONNECT {CONNECT_TARGET} HTTP/1.1\r\nHost: {CONNECT_TARGET}\r\n\
         Proxy-Authorization: Basic {credentials}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut head = [0u8; 12];
    let mut read = 0;
    while read < head.len() {
        let n = stream.read(&mut head[read..]).await?;
        if n == 0 {
            break;
        }
        read += n;
    }
    let status = std::str::from_utf8(&head[..read]).unwrap_or_default();
    Ok(match status.split_whitespace().nth(1) {
        Some("407") => Handshake::Rejected,
        Some(_) => Handshake::Accepted,
        None => Handshake::NotListening,
    })
}

async fn socks(stream: &mut TcpStream, login: &str, password: &str) -> std::io::Result<Handshake> {
    stream.write_all(&[5, 1, 2]).await?;
    let mut choice = [0u8; 2];
    stream.read_exact(&mut choice).await?;
    if choice != [5, 2] {
        return Ok(Handshake::Rejected);
    }
    let (user, pass) = (login.as_bytes(), password.as_bytes());
    let (Ok(ulen), Ok(plen)) = (u8::try_from(user.len()), u8::try_from(pass.len())) else {
        return Ok(Handshake::Rejected);
    };
    let mut auth = Vec::with_capacity(3 + user.len() + pass.len());
    auth.extend_from_slice(&[1, ulen]);
    auth.extend_from_slice(user);
    auth.push(plen);
    auth.extend_from_slice(pass);
    stream.write_all(&auth).await?;
    let mut status = [0u8; 2];
    stream.read_exact(&mut status).await?;
    Ok(if status[1] == 0 {
        Handshake::Accepted
    } else {
        Handshake::Rejected
    })
}

/// Waits (up to `window`) until both proxies of a just-applied port take the buyer's
/// credentials.
pub async fn until_accepted(
    host: &str,
    (http_port, socks_port): (u16, u16),
    want: &Want,
    window: Duration,
) -> Result<(), CommandError> {
    let deadline = Instant::now() + window;
    let password = want.password.expose();
    for (kind, port) in [(Kind::Http, http_port), (Kind::Socks, socks_port)] {
        loop {
            let outcome = handshake(host, port, kind, &want.login, password).await;
            if outcome == Handshake::Accepted {
                break;
            }
            if Instant::now() >= deadline {
                let why = match outcome {
                    Handshake::Rejected => "refuses the buyer's credentials",
                    _ => "does not listen",
                };
                return Err(CommandError::new(
                    CommandErrorCode::ProxysmartRefused,
                    format!("after apply_port the box's {kind:?} proxy on {host}:{port} {why}"),
                ));
            }
            tokio::time::sleep(super::POLL).await;
        }
    }
    Ok(())
}
