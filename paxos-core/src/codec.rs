//! The one wire and disk codec: a version byte followed by a postcard body.
//!
//! Decoding is total: malformed, truncated, oversized, trailing or unknown-version input yields a
//! [`CodecError`], never a panic. Sizes are checked before any allocation: postcard reads length
//! prefixes against the remaining input, and the outer limit bounds the input itself.

use crate::message::Envelope;
use serde::{de::DeserializeOwned, Serialize};
use thiserror::Error;

/// The current format version, the first byte of every encoded value.
pub const WIRE_VERSION: u8 = 1;

/// The default bound on one encoded value (16 MiB).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 << 20;

/// Why bytes could not be decoded (or a value encoded).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CodecError {
    /// The input was empty.
    #[error("empty input")]
    Empty,
    /// The version byte names a format this build does not know.
    #[error("unknown wire version {found} (this build speaks {WIRE_VERSION})")]
    UnknownVersion {
        /// The version byte found.
        found: u8,
    },
    /// The input (or the encoding) exceeds the size limit.
    #[error("{len} bytes exceed the limit of {max}")]
    Oversized {
        /// Size of the input.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The body does not decode as the expected type.
    #[error("malformed body: {0}")]
    Malformed(String),
    /// The body decoded but bytes were left over.
    #[error("{0} trailing bytes after the body")]
    Trailing(usize),
}

/// Encodes `value` as version byte + postcard, refusing results larger than `max`.
pub fn encode_with_limit<T: Serialize>(value: &T, max: usize) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(64);
    out.push(WIRE_VERSION);
    let out = postcard::to_extend(value, out).map_err(|e| CodecError::Malformed(e.to_string()))?;
    if out.len() > max {
        return Err(CodecError::Oversized {
            len: out.len(),
            max,
        });
    }
    Ok(out)
}

/// Encodes `value` under [`DEFAULT_MAX_MESSAGE_BYTES`].
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    encode_with_limit(value, DEFAULT_MAX_MESSAGE_BYTES)
}

/// Decodes a value encoded by [`encode`], refusing inputs larger than `max`.
pub fn decode_with_limit<T: DeserializeOwned>(bytes: &[u8], max: usize) -> Result<T, CodecError> {
    if bytes.len() > max {
        return Err(CodecError::Oversized {
            len: bytes.len(),
            max,
        });
    }
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version != WIRE_VERSION {
        return Err(CodecError::UnknownVersion { found: version });
    }
    let (value, rest) =
        postcard::take_from_bytes::<T>(body).map_err(|e| CodecError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CodecError::Trailing(rest.len()));
    }
    Ok(value)
}

/// Decodes under [`DEFAULT_MAX_MESSAGE_BYTES`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    decode_with_limit(bytes, DEFAULT_MAX_MESSAGE_BYTES)
}

/// Encodes a server-to-server envelope.
pub fn encode_envelope(envelope: &Envelope) -> Result<Vec<u8>, CodecError> {
    encode(envelope)
}

/// Decodes a server-to-server envelope.
pub fn decode_envelope(bytes: &[u8]) -> Result<Envelope, CodecError> {
    decode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::*;
    use crate::types::*;
    use bytes::Bytes;
    use proptest::prelude::*;

    fn update(c: u64, ts: u64, len: usize) -> ClientUpdate {
        ClientUpdate {
            client_id: ClientId(c),
            server_id: NodeId(1),
            timestamp: Timestamp(ts),
            payload: Bytes::from(vec![7u8; len]),
        }
    }

    fn samples() -> Vec<Message> {
        vec![
            Message::ClientUpdate(update(1, 2, 200)),
            Message::Prepare {
                view: View(3),
                local_aru: Seq(9),
            },
            Message::PrepareOk {
                view: View(3),
                local_aru: Seq(4),
                data_list: vec![
                    DataItem::Proposal(AcceptedProposal {
                        seq: Seq(10),
                        view: View(2),
                        update: update(1, 1, 3),
                    }),
                    DataItem::Ordered(OrderedUpdate {
                        seq: Seq(11),
                        update: update(2, 1, 0),
                    }),
                ],
                part: crate::message::PrepareOkPart::WHOLE,
            },
            Message::Proposal {
                view: View(5),
                items: vec![ProposalItem {
                    seq: Seq(1),
                    update: update(3, 3, 10),
                }],
            },
            Message::Accept {
                view: View(5),
                seqs: vec![SeqRange {
                    start: Seq(1),
                    end: Seq(8),
                }],
            },
            Message::Alive {
                local_aru: Seq(5),
                last_installed: View(2),
            },
            Message::ReconRequest {
                from: Seq(1),
                to: Seq(2),
            },
            Message::ReconReply {
                updates: vec![],
                complete: false,
            },
            Message::snapshot_chunk(
                &Snapshot::new(
                    Seq(3),
                    Bytes::from_static(b"abc"),
                    &[ClientRecord {
                        client: ClientId(1),
                        last_executed: Timestamp(4),
                        last_result: Bytes::new(),
                        last_active: Time::ZERO,
                        nonce: None,
                    }],
                ),
                0,
                usize::MAX,
            ),
            Message::SnapshotPull {
                seq: Seq(3),
                digest: crate::snapshot::Digest::of(b"x"),
                offset: 7,
                len: 9,
            },
            Message::Election(Bytes::from_static(&[1, 2, 3])),
        ]
    }

    #[test]
    fn every_message_round_trips() {
        for message in samples() {
            let env = Envelope {
                from: NodeId(2),
                message,
            };
            let bytes = encode_envelope(&env).unwrap();
            assert_eq!(bytes[0], WIRE_VERSION);
            assert_eq!(decode_envelope(&bytes).unwrap(), env);
        }
    }

    #[test]
    fn unknown_version_empty_trailing_and_oversized_are_rejected() {
        let env = Envelope {
            from: NodeId(0),
            message: samples().remove(1),
        };
        let mut bytes = encode_envelope(&env).unwrap();
        assert_eq!(decode_envelope(&[]), Err(CodecError::Empty));
        let mut wrong = bytes.clone();
        wrong[0] = 99;
        assert_eq!(
            decode_envelope(&wrong),
            Err(CodecError::UnknownVersion { found: 99 })
        );
        bytes.push(0);
        assert_eq!(decode_envelope(&bytes), Err(CodecError::Trailing(1)));
        let big = vec![WIRE_VERSION; 100];
        assert!(matches!(
            decode_with_limit::<Envelope>(&big, 10),
            Err(CodecError::Oversized { len: 100, max: 10 })
        ));
        assert!(matches!(
            encode_with_limit(&Message::ClientUpdate(update(1, 1, 100)), 50),
            Err(CodecError::Oversized { .. })
        ));
    }

    #[test]
    fn unknown_variant_tag_is_malformed() {
        // Variant index 200 does not exist.
        let bytes = [WIRE_VERSION, 0, 200, 1];
        assert!(matches!(
            decode_envelope(&bytes),
            Err(CodecError::Malformed(_))
        ));
    }

    #[test]
    fn huge_length_prefix_does_not_allocate() {
        // ClientUpdate with a payload length prefix of ~2^63: must fail, not allocate.
        let mut bytes = vec![WIRE_VERSION, 0, 0, 1, 0, 1];
        bytes.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
        assert!(decode_envelope(&bytes).is_err());
    }

    #[test]
    fn every_truncation_of_a_valid_encoding_is_rejected() {
        for message in samples() {
            let bytes = encode_envelope(&Envelope {
                from: NodeId(1),
                message,
            })
            .unwrap();
            for cut in 0..bytes.len() {
                assert!(decode_envelope(&bytes[..cut]).is_err(), "cut at {cut}");
            }
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_envelope(&bytes);
        }

        #[test]
        fn mutated_valid_bytes_never_panic(idx in 0usize..4096, val in any::<u8>(), which in 0usize..10) {
            let m = samples().remove(which);
            let mut bytes = encode_envelope(&Envelope { from: NodeId(1), message: m }).unwrap();
            let i = idx % bytes.len();
            bytes[i] = val;
            let _ = decode_envelope(&bytes);
        }
    }
}
