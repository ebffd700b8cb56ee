//! The client's address: the socket's peer, unless that peer is a trusted proxy
//! (`SWITCHBOARD_TRUSTED_PROXIES`), in which case the rightmost address in
//! `X-Forwarded-For` (or `Forwarded: for=`) that is not itself a trusted proxy. Addresses
//! further left were written by whoever sent the request and prove nothing.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The address a request counts as, for login and anonymous limits.
pub fn client_ip(peer: Option<SocketAddr>, headers: &HeaderMap, trusted: &[IpNet]) -> Option<IpAddr> {
    let peer = peer?.ip();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let chain = forwarded_chain(headers);
    // From the right: the first hop not our own proxies is the client.
    Some(chain.iter().rev().find(|ip| !is_trusted(ip)).or_else(|| chain.first()).copied().unwrap_or(peer))
}

/// Addresses of `X-Forwarded-For` (every header, in order), else of `Forwarded`'s `for=`.
fn forwarded_chain(headers: &HeaderMap) -> Vec<IpAddr> {
    let values = |name: &str| headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>();
    let from_xff: Vec<IpAddr> =
        values("x-forwarded-for").iter().flat_map(|v| v.split(',')).filter_map(|a| parse_addr(a.trim())).collect();
    if !from_xff.is_empty() {
        return from_xff;
    }
    values("forwarded")
        .iter()
        .flat_map(|v| v.split([',', ';']))
        .filter_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            key.trim().eq_ignore_ascii_case("for").then(|| parse_addr(value.trim().trim_matches('"'))).flatten()
        })
        .collect()
}

/// `1.2.3.4`, `1.2.3.4:5678`, `::1`, `[::1]` or `[::1]:5678`.
fn parse_addr(raw: &str) -> Option<IpAddr> {
    if let Ok(ip) = raw.parse() {
        return Some(ip);
    }
    if let Ok(socket) = raw.parse::<SocketAddr>() {
        return Some(socket.ip());
    }
    raw.strip_prefix('[').and_then(|r| r.split(']').next()).and_then(|ip| ip.parse().ok())
}

/// Parses `SWITCHBOARD_TRUSTED_PROXIES`: comma-separated CIDRs or single addresses.
pub fn parse_trusted(raw: &[String]) -> Result<Vec<IpNet>, String> {
    raw.iter()
        .map(|entry| {
            entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{entry:?} is not a CIDR (e.g. 10.0.0.0/8) or an address"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn forwarded_addresses_count_only_behind_a_trusted_proxy() {
        let trusted = parse_trusted(&["10.0.0.0/8".into(), "::1".into()]).unwrap();
        let proxy: SocketAddr = "10.1.2.3:443".parse().unwrap();
        let stranger: SocketAddr = "198.51.100.1:443".parse().unwrap();
        let spoofed = headers(&[("x-forwarded-for", "6.6.6.6, 203.0.113.7, 10.9.9.9")]);
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert_eq!(client_ip(Some(proxy), &spoofed, &trusted), ip("203.0.113.7"), "rightmost untrusted hop");
        assert_eq!(client_ip(Some(stranger), &spoofed, &trusted), ip("198.51.100.1"), "untrusted peers are believed");
        let forwarded = headers(&[("forwarded", "for=192.0.2.60;proto=http, for=\"[2001:db8::1]:4711\"")]);
        assert_eq!(client_ip(Some(proxy), &forwarded, &trusted), ip("2001:db8::1"));
        assert_eq!(client_ip(Some(proxy), &HeaderMap::new(), &trusted), ip("10.1.2.3"), "no header: the proxy");
        assert!(parse_trusted(&["not-a-net".into()]).is_err());
    }
}
