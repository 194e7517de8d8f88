//! The client's IP: the socket peer, unless that peer is a configured trusted proxy, in which
//! case the right-most untrusted address of `X-Forwarded-For`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use ipnet::IpNet;

/// The resolved client address, inserted into every request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

pub fn resolve(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let Some(xff) = forwarded_for else {
        return peer;
    };
    let hops: Vec<IpAddr> = xff
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    // Walk from the nearest hop outwards; the first address we do not trust is the client.
    hops.iter()
        .rev()
        .find(|ip| !is_trusted(ip))
        .or(hops.first())
        .copied()
        .unwrap_or(peer)
}

pub async fn client_ip(
    State(trusted): State<Arc<Vec<IpNet>>>,
    mut req: Request,
    next: Next,
) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let ip = if trusted.is_empty() {
        peer
    } else {
        let xff = req
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok());
        resolve(peer, xff, &trusted)
    };
    req.extensions_mut().insert(ClientIp(ip));
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn t5_forwarded_for_is_ignored_from_untrusted_peers() {
        let peer: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(resolve(peer, Some("1.2.3.4"), &nets(&["10.0.0.0/8"])), peer);
    }

    #[test]
    fn t5_trusted_proxy_yields_rightmost_untrusted_hop() {
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        let trusted = nets(&["10.0.0.0/8"]);
        // A client-supplied spoofed left-most entry does not win.
        assert_eq!(
            resolve(peer, Some("6.6.6.6, 198.51.100.7, 10.0.0.5"), &trusted),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(resolve(peer, None, &trusted), peer);
        assert_eq!(resolve(peer, Some("garbage"), &trusted), peer);
    }
}
