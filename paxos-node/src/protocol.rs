//! The client protocol: length-prefixed frames over TCP.
//!
//! Each frame is a little-endian `u32` length followed by that many bytes: a direction tag
//! ([`REQUEST_TAG`] or [`RESPONSE_TAG`], see [`Frame`]) and then the project's codec (a version
//! byte and postcard). The tag makes a request and a response unable to decode as each other: a client
//! connected to itself (TCP self-connect) reads its own request back and refuses it instead of
//! taking it for a reply. Frames above [`MAX_FRAME_BYTES`] are refused before any allocation, and
//! a malformed frame closes the connection with an error; the server counts both.

use bytes::Bytes;
use paxos_core::codec::{decode_with_limit, encode_with_limit, CodecError};
use paxos_core::{ClientId, Timestamp};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest frame accepted in either direction (2 MiB).
pub const MAX_FRAME_BYTES: usize = 2 << 20;

/// First body byte of every [`ClientRequest`] frame.
pub const REQUEST_TAG: u8 = 0x51; // 'Q'
/// First body byte of every [`ClientResponse`] frame.
pub const RESPONSE_TAG: u8 = 0x52; // 'R'

/// A message of the client protocol, with the direction tag its frames carry.
pub trait Frame: Serialize + DeserializeOwned {
    /// The first byte of this message's frame bodies.
    const TAG: u8;
}

impl Frame for ClientRequest {
    const TAG: u8 = REQUEST_TAG;
}

impl Frame for ClientResponse {
    const TAG: u8 = RESPONSE_TAG;
}

/// A client's request to its local server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientRequest {
    /// Order and execute an update. `(client_id, timestamp)` names it: a retry with the same name
    /// is executed at most once and answered with the same result. Timestamp 0 registers a
    /// session: `client_id` is then a random nonce below 2^63, answered with
    /// [`ClientResponse::SessionOpened`].
    Submit {
        /// The client.
        client_id: ClientId,
        /// The client's sequence number, strictly increasing.
        timestamp: Timestamp,
        /// The command (for the key-value store, an encoded `KvCommand`).
        payload: Bytes,
    },
    /// Ask for the server's status.
    Status,
}

/// A server's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientResponse {
    /// The update was executed.
    Reply {
        /// The client.
        client_id: ClientId,
        /// The update's timestamp.
        timestamp: Timestamp,
        /// The state machine's result.
        result: Bytes,
    },
    /// The server's status.
    Status(NodeStatus),
    /// The request was refused (e.g. the server is overloaded); retry later or elsewhere.
    Rejected {
        /// Why.
        reason: String,
    },
    /// A registration (timestamp 0) executed: use `session` as the client id from now on.
    SessionOpened {
        /// The nonce the registration named.
        nonce: ClientId,
        /// The session's id (the nonce itself when the servers run without session rules).
        session: ClientId,
    },
    /// The update's session expired (idle, or evicted by the session bounds): it was not applied
    /// now, and whether an earlier attempt of it was applied is unknown. Register again.
    SessionExpired {
        /// The client (session id).
        client_id: ClientId,
        /// The update's timestamp.
        timestamp: Timestamp,
    },
    /// The server was too busy to take the request: it was not taken (nothing of it is
    /// ordered); retry after a pause, here or elsewhere. Names the update it answers, if any.
    Overloaded {
        /// The client of the update refused (none for a status request).
        client_id: Option<ClientId>,
        /// The update's timestamp.
        timestamp: Option<Timestamp>,
    },
    /// The client id already executed a later timestamp than this update's: someone else uses
    /// this id, or this is a stale duplicate. Whether this update was applied is unknown.
    Superseded {
        /// The client.
        client_id: ClientId,
        /// The update's timestamp.
        timestamp: Timestamp,
        /// The latest timestamp the id executed.
        executed: Timestamp,
    },
}

/// A server's status as the client sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Server id.
    pub id: u32,
    /// Role: `leader-election`, `leader` or `follower`.
    pub role: String,
    /// Leader of the installed view, if any.
    pub leader: Option<u32>,
    /// Installed view.
    pub view: u64,
    /// Local aru: every slot up to it is executed here.
    pub aru: u64,
    /// Highest aru each server announced (own at own index).
    pub peer_aru: Vec<u64>,
    /// The server this node's election strategy believes should lead, if it has an opinion.
    pub election_leader: Option<u32>,
    /// Local client updates not yet executed.
    pub pending: u64,
    /// The election strategy in use.
    pub election: String,
    /// Digest of the state machine (equal at equal `aru` on every replica).
    pub state_digest: u64,
    /// Snapshots this server installed from a peer (state transfer after it fell too far behind).
    pub snapshots_installed: u64,
    /// Snapshots this server took of its own state (log compaction).
    pub snapshots_taken: u64,
    /// Entries in the exactly-once table (client sessions).
    pub sessions: u64,
    /// Sessions dropped from the table so far (idle or evicted by a bound), at this server.
    pub sessions_expired: u64,
    /// The snapshot this server is receiving, if any: bytes received in order, and its size.
    pub transfer: Option<(u64, u64)>,
    /// Snapshot image bytes received from peers so far (state transfer).
    pub snapshot_bytes_received: u64,
    /// Whether a snapshot image of this server is being built or written right now (a bench
    /// splits latency into "during snapshots" and "between" with it).
    pub snapshot_busy: bool,
    /// Bytes of updates this server's PrepareOks carried so far (view changes), and in how many
    /// messages (parts of at most the core's `max_message_bytes`).
    pub prepare_ok_sent: (u64, u64),
    /// Size of this server's latest snapshot image (0: none yet).
    pub snapshot_bytes: u64,
}

/// A framing or decoding failure.
#[derive(Debug, Error)]
pub enum FrameError {
    /// The peer closed the connection.
    #[error("connection closed")]
    Closed,
    /// The announced frame is larger than the limit.
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME_BYTES}")]
    TooLarge(usize),
    /// The frame carries another direction's tag (or none): e.g. a client reading its own request
    /// back over a connection to itself.
    #[error("frame tag {got:#04x} where {expected:#04x} was expected")]
    WrongTag {
        /// The tag read (0 for an empty frame).
        got: u8,
        /// The tag this direction carries.
        expected: u8,
    },
    /// The frame does not decode.
    #[error("malformed frame: {0}")]
    Codec(#[from] CodecError),
    /// An I/O error.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one frame and decodes it.
pub async fn read_frame<T: Frame, R: AsyncRead + Unpin>(r: &mut R) -> Result<T, FrameError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(len));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await?;
    decode_frame_body(&buf)
}

/// Decodes one frame body (tag and codec bytes, without the length prefix).
pub fn decode_frame_body<T: Frame>(body: &[u8]) -> Result<T, FrameError> {
    match body.split_first() {
        Some((&tag, rest)) if tag == T::TAG => Ok(decode_with_limit(rest, MAX_FRAME_BYTES)?),
        Some((&tag, _)) => Err(FrameError::WrongTag {
            got: tag,
            expected: T::TAG,
        }),
        None => Err(FrameError::WrongTag {
            got: 0,
            expected: T::TAG,
        }),
    }
}

/// Encodes and writes one frame.
pub async fn write_frame<T: Frame, W: AsyncWrite + Unpin>(
    w: &mut W,
    value: &T,
) -> Result<(), FrameError> {
    let mut out = Vec::new();
    encode_frame_into(&mut out, value)?;
    w.write_all(&out).await?;
    Ok(())
}

/// Appends one encoded frame (length prefix and body) to `out`, so that many frames can be
/// written with one system call.
pub fn encode_frame_into<T: Frame>(out: &mut Vec<u8>, value: &T) -> Result<(), FrameError> {
    let body = encode_with_limit(value, MAX_FRAME_BYTES - 1)?;
    out.reserve(body.len() + 5);
    out.extend_from_slice(&(body.len() as u32 + 1).to_le_bytes());
    out.push(T::TAG);
    out.extend_from_slice(&body);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_bad_frames_are_refused() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let req = ClientRequest::Submit {
            client_id: ClientId(3),
            timestamp: Timestamp(9),
            payload: Bytes::from_static(b"hello"),
        };
        write_frame(&mut a, &req).await.unwrap();
        let got: ClientRequest = read_frame(&mut b).await.unwrap();
        assert_eq!(got, req);

        // Oversized length prefix: refused without allocating.
        a.write_all(&u32::MAX.to_le_bytes()).await.unwrap();
        assert!(matches!(
            read_frame::<ClientRequest, _>(&mut b).await,
            Err(FrameError::TooLarge(_))
        ));

        // Garbage body.
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        a.write_all(&4u32.to_le_bytes()).await.unwrap();
        a.write_all(&[REQUEST_TAG, 1, 250, 250]).await.unwrap();
        assert!(matches!(
            read_frame::<ClientRequest, _>(&mut b).await,
            Err(FrameError::Codec(_))
        ));
        drop(a);
        assert!(matches!(
            read_frame::<ClientRequest, _>(&mut b).await,
            Err(FrameError::Closed)
        ));
    }

    /// A request read back as a response (a client connected to itself) is refused, and so is
    /// a response read as a request: the two directions' frames never decode as each other.
    #[tokio::test]
    async fn a_request_never_decodes_as_a_response() {
        let req = ClientRequest::Submit {
            client_id: ClientId(7),
            timestamp: Timestamp(1),
            payload: Bytes::from_static(b"put k v"),
        };
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        write_frame(&mut a, &req).await.unwrap();
        assert!(matches!(
            read_frame::<ClientResponse, _>(&mut b).await,
            Err(FrameError::WrongTag {
                got: REQUEST_TAG,
                expected: RESPONSE_TAG
            })
        ));
        let resp = ClientResponse::Reply {
            client_id: ClientId(7),
            timestamp: Timestamp(1),
            result: Bytes::from_static(b"put k v"),
        };
        write_frame(&mut a, &resp).await.unwrap();
        assert!(matches!(
            read_frame::<ClientRequest, _>(&mut b).await,
            Err(FrameError::WrongTag {
                got: RESPONSE_TAG,
                expected: REQUEST_TAG
            })
        ));
        assert!(matches!(
            decode_frame_body::<ClientRequest>(&[]),
            Err(FrameError::WrongTag { got: 0, .. })
        ));
    }
}
