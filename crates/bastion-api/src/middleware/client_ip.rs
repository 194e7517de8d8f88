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

/// The client of a request whose socket peer is `peer`, given every `X-Forwarded-For` line in
/// order. Lines are one comma-joined list (RFC 9110): a client that sends its own line before
/// the proxy's cannot choose its address. Walking from the nearest hop outwards, the first
/// untrusted address is the client (a trusted hop appended it). A hop that does not parse, or a
/// list of trusted hops only, names nobody a trusted hop vouched for: the peer itself is used.
pub fn resolve<'a>(
    peer: IpAddr,
    forwarded_for: impl IntoIterator<Item = &'a str>,
    trusted: &[IpNet],
) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<&str> = forwarded_for
        .into_iter()
        .flat_map(|line| line.split(','))
        .map(str::trim)
        .collect();
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) if is_trusted(&ip) => continue,
            Ok(ip) => return ip,
            Err(_) => break,
        }
    }
    peer
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
        let lines = req.headers().get_all("x-forwarded-for");
        // A line that is not visible ASCII cannot be a list of addresses: nobody is vouched for.
        match lines
            .iter()
            .map(|v| v.to_str())
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(lines) => resolve(peer, lines, &trusted),
            Err(_) => peer,
        }
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
        assert_eq!(resolve(peer, ["1.2.3.4"], &nets(&["10.0.0.0/8"])), peer);
    }

    #[test]
    fn t5_trusted_proxy_yields_rightmost_untrusted_hop() {
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        let trusted = nets(&["10.0.0.0/8"]);
        // A client-supplied spoofed left-most entry does not win.
        assert_eq!(
            resolve(peer, ["6.6.6.6, 198.51.100.7, 10.0.0.5"], &trusted),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(resolve(peer, [], &trusted), peer);
        assert_eq!(resolve(peer, ["garbage"], &trusted), peer);
    }

    #[test]
    fn t5_every_forwarded_for_line_is_one_list_so_a_client_line_cannot_pick_the_address() {
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        let trusted = nets(&["10.0.0.0/8"]);
        // The client sent its own line; the proxy added the real address on a second line.
        assert_eq!(
            resolve(peer, ["6.6.6.6", "198.51.100.7"], &trusted),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            resolve(
                peer,
                ["6.6.6.6, 7.7.7.7", "198.51.100.7, 10.0.0.9"],
                &trusted
            ),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn t5_all_trusted_or_unparseable_hops_yield_the_peer_never_a_client_supplied_hop() {
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        let trusted = nets(&["10.0.0.0/8"]);
        // A host inside the trusted range naming another trusted address is not believed.
        assert_eq!(resolve(peer, ["10.9.9.9"], &trusted), peer);
        assert_eq!(resolve(peer, ["10.9.9.9, 10.0.0.5"], &trusted), peer);
        // A hop that does not parse ends the walk: what lies beyond it is the client's word.
        assert_eq!(resolve(peer, ["6.6.6.6, junk, 10.0.0.5"], &trusted), peer);
    }
}
