//! A TCP proxy that can simulate a network partition: while partitioned it stops forwarding
//! bytes in both directions **without closing** either socket — no FIN, no RST, exactly
//! what a peer sees when a router drops everything (the half-open case that only
//! heartbeats can detect). Connections frozen by a partition stay dead after it heals
//! (they are dropped then; both ends gave up long before); new connections work again.

use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};

/// A running partition proxy.
#[derive(Debug)]
pub struct PartitionProxy {
    addr: SocketAddr,
    partitioned: Arc<watch::Sender<bool>>,
    _stop: DropGuard,
}

impl PartitionProxy {
    /// Forwards every connection on a fresh 127.0.0.1 port to `upstream`.
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<PartitionProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let partitioned = Arc::new(watch::channel(false).0);
        let stop = CancellationToken::new();
        let (token, state) = (stop.clone(), partitioned.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = token.cancelled() => return,
                    a = listener.accept() => a,
                };
                if let Ok((tcp, _)) = accepted {
                    let (token, rx) = (token.clone(), state.subscribe());
                    tokio::spawn(async move {
                        tokio::select! {
                            _ = token.cancelled() => {}
                            _ = serve(tcp, upstream, rx) => {}
                        }
                    });
                }
            }
        });
        Ok(PartitionProxy {
            addr,
            partitioned,
            _stop: stop.drop_guard(),
        })
    }

    /// `http://ADDR`, a base URL for the agent's `control_plane.url`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Starts (true) or heals (false) the partition.
    pub fn set_partitioned(&self, partitioned: bool) {
        self.partitioned.send_replace(partitioned);
    }
}

/// One connection: forward until the peer closes or a partition freezes it; a frozen
/// connection is held open (silently) until the partition heals, then dropped.
async fn serve(client: TcpStream, upstream: SocketAddr, mut partitioned: watch::Receiver<bool>) {
    let already = *partitioned.borrow();
    if already {
        // Accepted during a partition: the SYN "got through" but nothing else will.
        let _ = partitioned.wait_for(|p| !p).await;
        return;
    }
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut server_rx, mut server_tx) = server.into_split();
    let forward = async {
        let mut up = [0u8; 16 * 1024];
        let mut down = [0u8; 16 * 1024];
        loop {
            tokio::select! {
                n = client_rx.read(&mut up) => match n {
                    Ok(0) | Err(_) => { let _ = server_tx.shutdown().await; return; }
                    Ok(n) => if server_tx.write_all(&up[..n]).await.is_err() { return },
                },
                n = server_rx.read(&mut down) => match n {
                    Ok(0) | Err(_) => { let _ = client_tx.shutdown().await; return; }
                    Ok(n) => if client_tx.write_all(&down[..n]).await.is_err() { return },
                },
            }
        }
    };
    let mut frozen = partitioned.clone();
    let partition_started = async move { frozen.wait_for(|p| *p).await.is_ok() };
    let froze = tokio::select! {
        _ = forward => false,
        started = partition_started => started,
    };
    if froze {
        // Keep all four halves alive (no FIN) until the partition heals.
        let _ = partitioned.wait_for(|p| !p).await.map(drop);
    }
}
