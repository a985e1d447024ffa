//! Byte plumbing shared by both proxies: dialling the origin with a timeout and copying both
//! ways while counting into the port's counters and applying its limits (`limits`).

use super::limits::Direction;
use super::listeners::LivePort;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest chunk copied at once (also the most a speed-limited port sends in one go).
const CHUNK: usize = 16 * 1024;

/// Connects to `host:port` (a name is resolved), from `source` when given (the modem's
/// egress address, `listeners::Path`).
pub(crate) async fn connect_origin(
    host: &str,
    port: u16,
    source: Option<IpAddr>,
) -> io::Result<TcpStream> {
    let connect = async {
        let Some(source) = source else {
            return TcpStream::connect((host, port)).await;
        };
        let mut last = io::Error::from(io::ErrorKind::AddrNotAvailable);
        for addr in tokio::net::lookup_host((host, port)).await? {
            if addr.is_ipv4() != source.is_ipv4() {
                continue;
            }
            let socket = match source {
                IpAddr::V4(_) => TcpSocket::new_v4()?,
                IpAddr::V6(_) => TcpSocket::new_v6()?,
            };
            socket.bind(SocketAddr::new(source, 0))?;
            match socket.connect(addr).await {
                Ok(stream) => return Ok(stream),
                Err(e) => last = e,
            }
        }
        Err(last)
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(result) => result,
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
    }
}

/// Copies client↔origin until both directions are done; an error in either (including a
/// quota used up) ends both.
pub(crate) async fn pipe(client: TcpStream, origin: TcpStream, live: &LivePort) -> io::Result<()> {
    let (client_read, client_write) = client.into_split();
    let (origin_read, origin_write) = origin.into_split();
    let upload = copy_counted(client_read, origin_write, live, Direction::Out);
    let download = copy_counted(origin_read, client_write, live, Direction::In);
    tokio::try_join!(upload, download).map(|_| ())
}

/// Writes `bytes` to the origin as upload traffic.
pub(crate) async fn send_counted(
    origin: &mut TcpStream,
    bytes: &[u8],
    live: &LivePort,
) -> io::Result<()> {
    for chunk in bytes.chunks(CHUNK) {
        forward(origin, chunk, live, Direction::Out).await?;
    }
    Ok(())
}

async fn copy_counted<R, W>(
    mut from: R,
    mut to: W,
    live: &LivePort,
    direction: Direction,
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            // Pass the half-close on so the other side sees EOF.
            return to.shutdown().await;
        }
        forward(&mut to, &buf[..n], live, direction).await?;
    }
}

/// One chunk: admitted by the port's limits, written, then counted.
async fn forward<W: AsyncWrite + Unpin>(
    to: &mut W,
    chunk: &[u8],
    live: &LivePort,
    direction: Direction,
) -> io::Result<()> {
    live.limits
        .admit(&live.counters, direction, chunk.len())
        .await?;
    to.write_all(chunk).await?;
    let (counter, lifetime) = match direction {
        Direction::In => (&live.counters.bytes_in, &live.counters.lifetime_in),
        Direction::Out => (&live.counters.bytes_out, &live.counters.lifetime_out),
    };
    counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
    lifetime.fetch_add(chunk.len() as u64, Ordering::Relaxed);
    Ok(())
}
