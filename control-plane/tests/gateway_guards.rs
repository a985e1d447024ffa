//! Guards of the agent endpoint that only show under attack: a frame announced larger than
//! `max_frame_bytes` is refused from its header (not after the peer streamed it), so is a
//! message grown from small fragments, and a revocation that lands between an agent's key
//! check and its registration leaves no live session.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use farmhand_protocol::ProtocolErrorCode;
use std::net::SocketAddr;
use support::{FakeAgent, TestPlane, PATIENCE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A WebSocket opened by hand, so the test can write frame headers the libraries refuse to.
async fn raw_upgrade(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /v1/agent/connect HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    stream
}

/// A client frame header: `opcode` (0x1 text, 0x0 continuation), FIN when `last`, masked
/// with a zero key so the payload goes as is, announcing `len` bytes.
fn frame_header(opcode: u8, last: bool, len: u64) -> Vec<u8> {
    let mut header = vec![if last { 0x80 } else { 0 } | opcode, 0x80 | 127];
    header.extend_from_slice(&len.to_be_bytes());
    header.extend_from_slice(&[0, 0, 0, 0]);
    header
}

/// Reads server frames until a text frame; returns it and whether a close frame (or the
/// end of the stream) follows.
async fn text_then_close(stream: &mut TcpStream) -> (String, bool) {
    let read = async {
        let mut text = None;
        loop {
            let mut head = [0u8; 2];
            if stream.read_exact(&mut head).await.is_err() {
                return (text.unwrap_or_default(), true);
            }
            let len = match head[1] & 0x7f {
                126 => u64::from(stream.read_u16().await.unwrap()),
                127 => stream.read_u64().await.unwrap(),
                n => u64::from(n),
            };
            let mut payload = vec![0u8; len as usize];
            stream.read_exact(&mut payload).await.unwrap();
            match head[0] & 0x0f {
                0x1 => text = Some(String::from_utf8(payload).unwrap()),
                0x8 => return (text.unwrap_or_default(), true),
                _ => {}
            }
        }
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .expect("the plane answered without waiting for the rest of the frame")
}

#[tokio::test]
async fn a_frame_announced_too_large_is_refused_from_its_header() {
    let plane = TestPlane::start().await;
    let limit = plane.config.max_frame_bytes as u64;
    let mut ws = raw_upgrade(plane.addr).await;
    // Announce 8 MiB (under the library defaults: 16 MiB a frame, 64 MiB a message) and
    // send only the first 64 KiB of it.
    ws.write_all(&frame_header(0x1, true, 8 * 1024 * 1024))
        .await
        .unwrap();
    let _ = ws.write_all(&vec![b' '; 64 * 1024]).await;
    assert!(64 * 1024 < limit, "the sent part is under the limit itself");
    let (text, closed) = text_then_close(&mut ws).await;
    assert!(text.contains("\"frame_too_large\""), "{text}");
    assert!(closed, "closed after the refusal");
}

#[tokio::test]
async fn a_message_grown_from_small_fragments_is_refused_too() {
    let plane = TestPlane::start().await;
    let limit = plane.config.max_frame_bytes as u64;
    let mut ws = raw_upgrade(plane.addr).await;
    // Fragments of a quarter of the limit each, never final: the message passes the limit
    // at the fifth, long before tungstenite's 64 MiB default would stop it.
    let fragment = vec![b' '; (limit / 4) as usize];
    for i in 0..5 {
        let opcode = if i == 0 { 0x1 } else { 0x0 };
        let mut frame = frame_header(opcode, false, fragment.len() as u64);
        frame.extend_from_slice(&fragment);
        if ws.write_all(&frame).await.is_err() {
            break;
        }
    }
    let (text, closed) = text_then_close(&mut ws).await;
    assert!(text.contains("\"frame_too_large\""), "{text}");
    assert!(closed);
}

#[tokio::test]
async fn a_revocation_between_key_check_and_registration_leaves_no_session() {
    let plane = TestPlane::start().await;
    let identity = plane.enroll().await;
    let mut paused = plane.gateway().pause_next_registration();
    let connecting = {
        let url = plane.ws_url();
        let identity = identity.clone();
        tokio::spawn(async move {
            let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
            FakeAgent::handshake(ws, &identity).await
        })
    };
    assert!(paused.reached().await, "the handshake reached the window");
    // The key checked out; now the admin revokes before the session registers.
    let r = plane
        .delete(&format!("/v1/agents/{}", identity.agent_id), &plane.admin)
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    paused.resume();
    let refused = tokio::time::timeout(PATIENCE, connecting)
        .await
        .unwrap()
        .unwrap();
    let error = refused.err().expect("no session for a revoked agent");
    assert_eq!(error.code, ProtocolErrorCode::Revoked);
    assert!(!plane.gateway().is_connected(&identity.agent_id));
}
