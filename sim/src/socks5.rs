//! The per-port SOCKS5 proxy: RFC 1928 with RFC 1929 username/password as the only accepted
//! method, the CONNECT command, and IPv4 / domain / IPv6 addresses. A port whose quota is
//! used up answers "connection not allowed by ruleset" (0x02).

use super::listeners::LivePort;
use super::pipe;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
const METHOD_USER_PASS: u8 = 0x02;
const NO_ACCEPTABLE_METHOD: u8 = 0xFF;
const CMD_CONNECT: u8 = 0x01;

/// SOCKS5 reply codes (RFC 1928 §6).
#[derive(Debug, Clone, Copy)]
enum ReplyCode {
    Succeeded = 0x00,
    GeneralFailure = 0x01,
    NotAllowed = 0x02,
    HostUnreachable = 0x04,
    ConnectionRefused = 0x05,
    CommandNotSupported = 0x07,
    AddressTypeNotSupported = 0x08,
}

pub(crate) async fn serve(
    mut client: TcpStream,
    live: &LivePort,
    source: Option<std::net::IpAddr>,
) -> io::Result<()> {
    let target = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&mut client, live))
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
    let Some((host, port)) = target else {
        return Ok(());
    };
    if live.over_quota() {
        return reply(&mut client, ReplyCode::NotAllowed, None).await;
    }
    let origin = match pipe::connect_origin(&host, port, source).await {
        Ok(origin) => origin,
        Err(e) => {
            let code = match e.kind() {
                io::ErrorKind::ConnectionRefused => ReplyCode::ConnectionRefused,
                io::ErrorKind::TimedOut => ReplyCode::HostUnreachable,
                _ => ReplyCode::GeneralFailure,
            };
            return reply(&mut client, code, None).await;
        }
    };
    reply(&mut client, ReplyCode::Succeeded, origin.local_addr().ok()).await?;
    pipe::pipe(client, origin, live).await
}

/// Greeting, authentication and request; `None` when the client was turned away.
async fn handshake(client: &mut TcpStream, live: &LivePort) -> io::Result<Option<(String, u16)>> {
    if !negotiate_method(client).await? || !authenticate(client, live).await? {
        return Ok(None);
    }
    let [version, cmd, _reserved, atyp] = read_array::<4>(client).await?;
    if version != 5 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not SOCKS5"));
    }
    let Some(host) = read_address(client, atyp).await? else {
        reply(client, ReplyCode::AddressTypeNotSupported, None).await?;
        return Ok(None);
    };
    let port = u16::from_be_bytes(read_array::<2>(client).await?);
    if cmd != CMD_CONNECT {
        reply(client, ReplyCode::CommandNotSupported, None).await?;
        return Ok(None);
    }
    Ok(Some((host, port)))
}

async fn negotiate_method(client: &mut TcpStream) -> io::Result<bool> {
    let [version, count] = read_array::<2>(client).await?;
    if version != 5 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not SOCKS5"));
    }
    let mut methods = vec![0u8; usize::from(count)];
    client.read_exact(&mut methods).await?;
    let chosen = if methods.contains(&METHOD_USER_PASS) {
        METHOD_USER_PASS
    } else {
        NO_ACCEPTABLE_METHOD
    };
    client.write_all(&[5, chosen]).await?;
    Ok(chosen == METHOD_USER_PASS)
}

/// RFC 1929: VER=1, ULEN, UNAME, PLEN, PASSWD → [1, 0] or [1, 1] and close.
async fn authenticate(client: &mut TcpStream, live: &LivePort) -> io::Result<bool> {
    let [version, user_len] = read_array::<2>(client).await?;
    if version != 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "bad auth version",
        ));
    }
    let mut user = vec![0u8; usize::from(user_len)];
    client.read_exact(&mut user).await?;
    let [pass_len] = read_array::<1>(client).await?;
    let mut pass = vec![0u8; usize::from(pass_len)];
    client.read_exact(&mut pass).await?;
    let ok = live.credentials_match(&user, &pass);
    client.write_all(&[1, if ok { 0 } else { 1 }]).await?;
    if !ok {
        client.shutdown().await?;
    }
    Ok(ok)
}

async fn read_address(client: &mut TcpStream, atyp: u8) -> io::Result<Option<String>> {
    Ok(Some(match atyp {
        0x01 => Ipv4Addr::from(read_array::<4>(client).await?).to_string(),
        0x04 => Ipv6Addr::from(read_array::<16>(client).await?).to_string(),
        0x03 => {
            let [len] = read_array::<1>(client).await?;
            let mut name = vec![0u8; usize::from(len)];
            client.read_exact(&mut name).await?;
            String::from_utf8(name)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad domain"))?
        }
        _ => return Ok(None),
    }))
}

async fn read_array<const N: usize>(client: &mut TcpStream) -> io::Result<[u8; N]> {
    let mut buf = [0u8; N];
    client.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn reply(
    client: &mut TcpStream,
    code: ReplyCode,
    bound: Option<SocketAddr>,
) -> io::Result<()> {
    let mut msg = vec![5, code as u8, 0];
    match bound {
        Some(SocketAddr::V6(a)) => {
            msg.push(0x04);
            msg.extend_from_slice(&a.ip().octets());
            msg.extend_from_slice(&a.port().to_be_bytes());
        }
        Some(SocketAddr::V4(a)) => {
            msg.push(0x01);
            msg.extend_from_slice(&a.ip().octets());
            msg.extend_from_slice(&a.port().to_be_bytes());
        }
        None => msg.extend_from_slice(&[0x01, 0, 0, 0, 0, 0, 0]),
    }
    client.write_all(&msg).await
}
