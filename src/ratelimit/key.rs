//! Who a budget belongs to: the client IP before authentication, the verified principal after.
//!
//! Client IP ([`ClientIpResolver`]): the TCP peer, unless the peer is a trusted proxy; then
//! `X-Forwarded-For` is read right to left (all its header lines, in order) and the first
//! entry that is not itself a trusted proxy is the client. Edge cases: an entry that does not
//! parse as an IP (garbage, `unknown`, an obfuscated node) ends the walk and the last trusted
//! hop is taken as the client, since nothing left of it can be believed; when every entry is
//! trusted, the left-most is the client; at most [`MAX_FORWARDED_HOPS`] entries are read.
//! IPv4-mapped IPv6 addresses count as IPv4; an IPv6 client is aggregated to its /64, because
//! one subscriber usually holds a whole /64 and could otherwise rotate addresses for free.
//!
//! Principal ([`principal_key`]): the principal's `id` (`key:<name>`, `jwt:<iss>#<sub>`), set
//! by the auth layer from *verified* credentials only; nothing the client sent unverified
//! (other claims, `Feldera-Tenant`, a second token) takes part. With authentication off the
//! principal is `anonymous` for everyone, so the key falls back to `ip:<client>`.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use http::HeaderMap;
use ipnet::IpNet;

use crate::principal::{Credential, Principal};
use crate::wire::X_FORWARDED_FOR;

/// Most `X-Forwarded-For` entries read from the right.
pub const MAX_FORWARDED_HOPS: usize = 32;

/// Finds the client IP of a request.
#[derive(Debug, Clone, Default)]
pub struct ClientIpResolver {
    trusted: Vec<IpNet>,
}

impl ClientIpResolver {
    pub fn new(trusted: Vec<IpNet>) -> Self {
        ClientIpResolver { trusted }
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// The client IP (not yet aggregated) of a request from `peer`.
    pub fn client_ip(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = canonical(peer.ip());
        if !self.is_trusted(client) {
            return client;
        }
        // Header lines are in arrival order; the right-most entry of the last line is the
        // one our peer appended.
        let lines: Vec<&[u8]> = headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            .map(|v| v.as_bytes())
            .collect();
        let entries = lines
            .iter()
            .rev()
            .flat_map(|line| line.rsplit(|b| *b == b','))
            .take(MAX_FORWARDED_HOPS);
        for entry in entries {
            let Some(ip) = parse_entry(entry) else {
                return client;
            };
            client = canonical(ip);
            if !self.is_trusted(client) {
                return client;
            }
        }
        client
    }
}

/// Parses one `X-Forwarded-For` entry: an address, optionally bracketed or with a port.
fn parse_entry(entry: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(entry).ok()?.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    // `[v6]:port`, `[v6]` or `v4:port`.
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    text.strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .and_then(|t| t.parse::<Ipv6Addr>().ok())
        .map(IpAddr::V6)
}

/// IPv4-mapped IPv6 (`::ffff:a.b.c.d`) as IPv4; everything else unchanged.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// The budget key of a client IP: IPv4 as is, IPv6 masked to its /64.
pub fn ip_key(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

/// Text form of an IP key for Redis and logs (`203.0.113.7`, `2001:db8:1:2::/64`).
pub fn ip_key_text(key: IpAddr) -> String {
    match key {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("{v6}/64"),
    }
}

/// The budget key of a principal after authentication; `client` is used only when
/// authentication is off (the anonymous principal is everyone).
pub fn principal_key(principal: &Principal, client: Option<IpAddr>) -> String {
    match principal.credential {
        Credential::ApiKey { .. } | Credential::Jwt { .. } | Credential::ClientCert { .. } => {
            principal.id.to_string()
        }
        Credential::Anonymous => match client {
            Some(ip) => format!("ip:{}", ip_key_text(ip_key(ip))),
            None => "ip:unknown".to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;
    use http::HeaderValue;

    fn resolver(trusted: &[&str]) -> ClientIpResolver {
        ClientIpResolver::new(trusted.iter().map(|t| t.parse().unwrap()).collect())
    }

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for line in xff {
            map.append(X_FORWARDED_FOR, HeaderValue::from_str(line).unwrap());
        }
        map
    }

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 4000)
    }

    #[test]
    fn untrusted_peer_is_the_client_whatever_it_forwards() {
        let r = resolver(&["10.0.0.0/8"]);
        let ip = r.client_ip(peer("198.51.100.9"), &headers(&["1.2.3.4"]));
        assert_eq!(ip, "198.51.100.9".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn trusted_peer_yields_the_right_most_untrusted_entry() {
        let r = resolver(&["10.0.0.0/8"]);
        let h = headers(&["6.6.6.6, 203.0.113.5", "10.1.1.1, 10.2.2.2"]);
        assert_eq!(
            r.client_ip(peer("10.0.0.1"), &h),
            "203.0.113.5".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn garbage_entry_stops_at_the_last_trusted_hop() {
        let r = resolver(&["10.0.0.0/8"]);
        let h = headers(&["203.0.113.5, unknown, 10.2.2.2"]);
        assert_eq!(
            r.client_ip(peer("10.0.0.1"), &h),
            "10.2.2.2".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn all_trusted_entries_yield_the_left_most_and_ports_are_ignored() {
        let r = resolver(&["10.0.0.0/8", "2001:db8::/32"]);
        let h = headers(&["10.9.9.9:1234, [2001:db8::1]:80"]);
        assert_eq!(
            r.client_ip(peer("10.0.0.1"), &h),
            "10.9.9.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            r.client_ip(peer("10.0.0.1"), &headers(&["[2001:db9::7]"])),
            "2001:db9::7".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn no_forwarded_header_means_the_peer() {
        let r = resolver(&["10.0.0.0/8"]);
        assert_eq!(
            r.client_ip(peer("10.0.0.1"), &HeaderMap::new()),
            "10.0.0.1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn ipv6_is_aggregated_to_64_and_mapped_ipv4_is_ipv4() {
        let a = ip_key("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = ip_key("2001:db8:1:2:bbbb::9".parse().unwrap());
        let c = ip_key("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(ip_key_text(a), "2001:db8:1:2::/64");
        assert_eq!(
            ip_key("::ffff:192.0.2.7".parse().unwrap()),
            "192.0.2.7".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn principal_key_is_the_verified_id_and_anonymous_falls_back_to_ip() {
        let a = Principal::jwt("https://idp", "alice", Role::Read, Some("t1".into()));
        let b = Principal::jwt("https://idp", "alice", Role::Write, Some("t2".into()));
        assert_eq!(principal_key(&a, None), "jwt:https://idp#alice");
        assert_eq!(principal_key(&a, None), principal_key(&b, None));
        let key = Principal::api_key("ci", Role::Write, None);
        assert_eq!(
            principal_key(&key, Some("1.2.3.4".parse().unwrap())),
            "key:ci"
        );
        let anon = Principal {
            id: "anonymous".into(),
            credential: Credential::Anonymous,
            role: Role::Owner,
            tenant: None,
        };
        assert_eq!(
            principal_key(&anon, Some("1.2.3.4".parse().unwrap())),
            "ip:1.2.3.4"
        );
    }
}
