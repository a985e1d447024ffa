//! The echo endpoint (`[probe] listen`): its own listener, answering any request with the
//! caller's IP as plain text. Probes fetch it through sold ports, so what it answers is
//! the port's egress IP. Anyone can reach it, so it holds nothing a client can grow: a
//! bounded number of connections (and of them, a few per address), a bounded request head
//! read within a short deadline, one answer, close.

use crate::metrics::PlaneMetrics;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 256;
/// Connections served at once from one address: probes come from many modems' addresses,
/// so one client holding connections open cannot take every slot.
const MAX_PER_ADDRESS: usize = 8;
/// The most of a request head read.
const MAX_HEAD: usize = 8 * 1024;
/// Time a client has to send its request head (a probe sends it at once).
const HEAD_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, metrics: Arc<PlaneMetrics>, shutdown: CancellationToken) {
    if let Ok(addr) = listener.local_addr() {
        info!("probe echo endpoint listening on http://{addr}");
    }
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let per_address: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => return,
            permit = slots.clone().acquire_owned() => permit,
        };
        let Ok(permit) = permit else { return };
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, peer)) = accepted else {
            continue;
        };
        let ip = peer.ip().to_canonical();
        if !take(&per_address, ip) {
            continue;
        }
        let (metrics, per_address) = (metrics.clone(), per_address.clone());
        tokio::spawn(async move {
            if let Err(e) = answer(stream, ip).await {
                debug!(error = %e, "probe echo: connection ended");
            } else {
                metrics.echo_answered();
            }
            give_back(&per_address, ip);
            drop(permit);
        });
    }
}

/// Takes one of `ip`'s connection slots; false (drop the connection) when it has none.
fn take(per_address: &Mutex<HashMap<IpAddr, usize>>, ip: IpAddr) -> bool {
    let mut open = per_address.lock().unwrap_or_else(PoisonError::into_inner);
    let n = open.entry(ip).or_default();
    if *n >= MAX_PER_ADDRESS {
        return false;
    }
    *n += 1;
    true
}

fn give_back(per_address: &Mutex<HashMap<IpAddr, usize>>, ip: IpAddr) {
    let mut open = per_address.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(n) = open.get_mut(&ip) {
        *n -= 1;
        if *n == 0 {
            open.remove(&ip);
        }
    }
}

async fn answer(mut stream: TcpStream, peer: IpAddr) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    let read_head = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            if head.len() > MAX_HEAD {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "head too large",
                ));
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            head.extend_from_slice(&chunk[..n]);
        }
        Ok(())
    };
    tokio::time::timeout(HEAD_TIMEOUT, read_head)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    let body = peer.to_string();
    let reply = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(reply.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        // The server may close before reading everything of an oversized head.
        let _ = stream.write_all(request).await;
        let mut out = Vec::new();
        let _ = stream.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn it_answers_the_callers_ip_and_nothing_oversized() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Arc::new(PlaneMetrics::default());
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve(listener, metrics.clone(), stop.clone()));
        let reply = exchange(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
        assert!(reply.ends_with("\r\n\r\n127.0.0.1"), "{reply}");
        let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD * 2));
        assert_eq!(
            exchange(addr, huge.as_bytes()).await,
            "",
            "an oversized head gets nothing"
        );
        assert_eq!(metrics.echo_requests(), 1);
        stop.cancel();
        task.await.unwrap();
    }
}
