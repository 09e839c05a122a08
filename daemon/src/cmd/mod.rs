//! One handler per request. Each takes the shared [`Ctx`](crate::server::Ctx)
//! and returns its [`Answer`]: the response to send, or word that it was
//! written already; none of them can fail the connection.

pub mod consent;
pub mod emit;
pub mod flush;
pub mod forget;
pub mod probe;
pub mod purge;
pub mod receipts;
pub mod show;
pub mod status;
pub mod stop;

use crate::server::Ctx;
use crate::transport::PeerIdentity;
use telemetry_proto::{ErrorCode, Request, Response};

/// What a handler answers.
#[derive(Debug)]
pub enum Answer {
    /// Send this response.
    Send(Response),
    /// The response frame was written to the peer already, all but these
    /// bytes (see [`emit::submit`]).
    Written {
        /// What is left to write, usually nothing.
        rest: Vec<u8>,
    },
}

/// Who is asking, from the connection's peer credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The peer's user, as the OS told us.
    pub identity: PeerIdentity,
    /// Which connection (unique in this process): lets the store wait for
    /// a client it just answered to share the next commit.
    pub connection: u64,
    /// Requests this connection made before the current one.
    pub earlier_requests: u64,
    /// How the connection's messages are written (its first byte chose).
    pub encoding: telemetry_proto::Encoding,
    /// The protocol version of its current request, which its answer is
    /// written in (an older client against this newer daemon).
    pub version: u16,
    /// Bytes past the current request were already read: the client is
    /// streaming, and its requests should share the store thread's
    /// commits rather than each be committed alone.
    pub read_ahead: bool,
}

/// Whether `req` changes or reveals stored data, and so needs a trusted
/// peer.
pub fn is_privileged(req: &Request) -> bool {
    !matches!(req, Request::Emit { .. } | Request::Status)
}

/// Whether `peer` may make privileged requests to a daemon running as
/// `daemon`: only the same user, or the administrator (root, LocalSystem).
pub fn trusted(peer: &Peer, daemon: &PeerIdentity) -> bool {
    peer.identity.may_administer(daemon)
}

/// Route a decoded request to its handler, after the permission check.
/// A connection sends emits through [`emit::submit`] instead, which lets
/// them wait for their commit while it reads on; this answers one whole.
pub async fn dispatch(ctx: &Ctx, peer: &Peer, req: Request) -> Answer {
    if is_privileged(&req) && !trusted(peer, &ctx.daemon_identity) {
        return Answer::Send(Response::Error {
            code: ErrorCode::PermissionDenied,
            message: format!(
                "only {} (the daemon's user) or {} may flush, show, purge, forget, probe, list receipts, change consent or stop it; this peer is {}",
                ctx.daemon_identity.describe(),
                ctx.daemon_identity.administrator(),
                peer.identity.describe()
            ),
        });
    }
    Answer::Send(match req {
        Request::Emit { events, ack } => {
            return emit::submit(ctx, peer, None, events, ack).await.await
        }
        Request::Status => status::handle(ctx, trusted(peer, &ctx.daemon_identity)).await,
        Request::Flush => flush::handle(ctx).await,
        Request::ConsentChanged { product, build } => consent::handle(ctx, product, build).await,
        Request::Show { product, after_seq } => show::handle(ctx, product, after_seq).await,
        Request::Purge { product } => purge::handle(ctx, product).await,
        Request::Probe => probe::handle(ctx).await,
        Request::Forget { product, build } => forget::handle(ctx, product, build).await,
        Request::Receipts { key, after } => receipts::handle(ctx, key, after).await,
        Request::Stop => stop::handle(ctx),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: Option<u32>) -> Peer {
        Peer {
            version: telemetry_proto::PROTOCOL_VERSION,
            identity: uid.map_or(PeerIdentity::Unknown, PeerIdentity::Uid),
            connection: 1,
            earlier_requests: 0,
            encoding: telemetry_proto::Encoding::Binary,
            read_ahead: false,
        }
    }

    #[test]
    fn only_the_owner_and_root_may_touch_stored_data() {
        let me = PeerIdentity::Uid(1000);
        for req in [
            Request::Flush,
            Request::Show {
                product: None,
                after_seq: 0,
            },
            Request::Purge { product: None },
            Request::Probe,
            Request::Forget {
                product: "p".into(),
                build: "1".into(),
            },
            Request::Receipts {
                key: None,
                after: 0,
            },
            Request::ConsentChanged {
                product: "p".into(),
                build: "1".into(),
            },
        ] {
            assert!(is_privileged(&req), "{req:?}");
        }
        assert!(!is_privileged(&Request::Status));
        assert!(!is_privileged(&Request::Emit {
            events: vec![],
            ack: true
        }));
        assert!(trusted(&peer(Some(1000)), &me));
        assert!(trusted(&peer(Some(0)), &me));
        assert!(!trusted(&peer(Some(1001)), &me));
        assert!(!trusted(&peer(None), &me), "unknown peers are not trusted");
    }
}
