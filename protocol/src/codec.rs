//! Encoding and decoding of frames, with the size limit enforced before parsing.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Default maximum frame size (1 MiB); larger frames are refused, not buffered.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 1024 * 1024;

/// Why a frame was rejected.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The frame is larger than the limit.
    #[error("frame of {size} bytes exceeds the {limit}-byte limit")]
    TooLarge {
        /// Size of the frame.
        size: usize,
        /// The limit in force.
        limit: usize,
    },
    /// The frame is not a valid message (bad JSON, unknown type or field, wrong type).
    #[error("malformed frame: {0}")]
    Malformed(#[from] serde_json::Error),
}

/// Parses one text frame into a message, refusing frames over `limit` bytes.
pub fn decode<T: DeserializeOwned>(frame: &str, limit: usize) -> Result<T, DecodeError> {
    if frame.len() > limit {
        return Err(DecodeError::TooLarge {
            size: frame.len(),
            limit,
        });
    }
    Ok(serde_json::from_str(frame)?)
}

/// Serialises a message into one text frame.
pub fn encode<T: Serialize>(message: &T) -> String {
    // Our message types contain only strings, numbers, bools, sequences and structs, for
    // which serde_json cannot fail.
    serde_json::to_string(message).unwrap_or_else(|_| String::from("{}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::*;

    fn roundtrip(msg: &AgentMessage) {
        let text = encode(msg);
        let back: AgentMessage =
            decode(&text, DEFAULT_MAX_FRAME_BYTES).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert_eq!(&back, msg);
    }

    #[test]
    fn agent_messages_roundtrip() {
        roundtrip(&AgentMessage::Hello(Hello {
            versions: SUPPORTED_VERSIONS,
            agent_id: "a1".into(),
            agent_version: "0.1.0".into(),
        }));
        roundtrip(&AgentMessage::CommandResult(CommandResult {
            id: "c1".into(),
            outcome: Outcome::Ok {
                output: CommandOutput::Provision(Provisioned {
                    allocation_id: "al".into(),
                    imei: "356000000000001".into(),
                    port_id: "portX".into(),
                    http_port: 8001,
                    socks_port: 5001,
                }),
            },
        }));
        roundtrip(&AgentMessage::Usage(UsageReport {
            measured_at_ms: 1_795_435_200_000,
            allocations: vec![AllocationUsage {
                allocation_id: "al".into(),
                bytes_in: 21_100_000_000,
                bytes_out: 0,
            }],
        }));
        roundtrip(&AgentMessage::Rotated(RotationReport {
            imei: "356000000000001".into(),
            old_ip: Some("198.51.100.1".into()),
            new_ip: None,
            changed: false,
            at_ms: 1_795_435_200_000,
            automatic: true,
        }));
        roundtrip(&AgentMessage::CommandResult(CommandResult {
            id: "c2".into(),
            outcome: Outcome::Error {
                error: CommandError::new(CommandErrorCode::ModemOffline, "x"),
            },
        }));
    }

    #[test]
    fn wire_shape_is_tagged_by_type() {
        let text = encode(&PlaneMessage::Command(Command {
            id: "c1".into(),
            deadline_ms: 5,
            body: CommandBody::Release(Release {
                allocation_id: "al".into(),
            }),
        }));
        assert_eq!(
            text,
            r#"{"type":"command","id":"c1","deadline_ms":5,"body":{"op":"release","allocation_id":"al"}}"#
        );
    }

    #[test]
    fn rotate_every_s_is_optional_on_the_wire() {
        let without = r#"{"op":"provision","allocation_id":"al","imei":"356000000000001","login":"l","password":"p","expires_at_ms":9}"#;
        let CommandBody::Provision(mut p) =
            serde_json::from_str(without).unwrap_or_else(|e| panic!("{e}"))
        else {
            panic!("not a provision");
        };
        assert_eq!(p.rotate_every_s, None);
        let body = CommandBody::Provision(p.clone());
        assert!(!serde_json::to_string(&body)
            .unwrap_or_default()
            .contains("rotate_every_s"));
        p.rotate_every_s = Some(600);
        let text = serde_json::to_string(&CommandBody::Provision(p)).unwrap_or_default();
        assert!(text.contains(r#""rotate_every_s":600"#), "{text}");
    }

    #[test]
    fn rejects_oversized_unknown_and_mistyped_frames() {
        let big = format!(
            r#"{{"type":"heartbeat","time_ms":1,"pad":"{}"}}"#,
            "x".repeat(100)
        );
        assert!(matches!(
            decode::<AgentMessage>(&big, 50),
            Err(DecodeError::TooLarge { .. })
        ));
        for bad in [
            r#"{"type":"heartbeat","time_ms":1,"extra":true}"#,
            r#"{"type":"heartbeat","time_ms":"1"}"#,
            r#"{"type":"launch_missiles"}"#,
            r#"{"time_ms":1}"#,
            r#"[1,2,3]"#,
            "not json",
        ] {
            assert!(
                matches!(
                    decode::<AgentMessage>(bad, 1024),
                    Err(DecodeError::Malformed(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn unknown_error_codes_from_newer_peers_still_parse() {
        let text =
            r#"{"id":"c","outcome":{"status":"error","error":{"code":"new_thing","message":"m"}}}"#;
        let r: CommandResult = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            matches!(r.outcome, Outcome::Error { error } if error.code == CommandErrorCode::Unknown)
        );
    }
}
