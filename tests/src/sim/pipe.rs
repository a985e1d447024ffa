//! Byte plumbing shared by both proxies: dialling the origin with a timeout and copying both
//! ways while counting into the port's counters.

use super::state::Counters;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to `host:port` (a name is resolved).
pub(crate) async fn connect_origin(host: &str, port: u16) -> io::Result<TcpStream> {
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host, port))).await {
        Ok(result) => result,
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
    }
}

/// Copies client↔origin until both directions are done; an error in either ends both.
pub(crate) async fn pipe(
    client: TcpStream,
    origin: TcpStream,
    counters: &Counters,
) -> io::Result<()> {
    let (client_read, client_write) = client.into_split();
    let (origin_read, origin_write) = origin.into_split();
    let upload = copy_counted(client_read, origin_write, &counters.bytes_out);
    let download = copy_counted(origin_read, client_write, &counters.bytes_in);
    tokio::try_join!(upload, download).map(|_| ())
}

/// Writes `bytes` to the origin as upload traffic.
pub(crate) async fn send_counted(
    origin: &mut TcpStream,
    bytes: &[u8],
    counters: &Counters,
) -> io::Result<()> {
    origin.write_all(bytes).await?;
    counters
        .bytes_out
        .fetch_add(bytes.len() as u64, Ordering::Relaxed);
    Ok(())
}

async fn copy_counted<R, W>(mut from: R, mut to: W, counter: &AtomicU64) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            // Pass the half-close on so the other side sees EOF.
            return to.shutdown().await;
        }
        to.write_all(&buf[..n]).await?;
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
}
