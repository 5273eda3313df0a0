//! The SSRF guard on webhook targets. A subscriber names a URL; cxgap connects to it from
//! inside the cluster, so a URL that resolves to an internal address would let a tenant
//! probe or attack what only the cluster can reach. Every address a name resolves to is
//! checked (one bad answer refuses the target), and delivery connects to exactly the
//! addresses checked, so DNS cannot change its answer in between (rebinding). An operator
//! allow-list (CIDR blocks) admits named internal ranges, e.g. loopback in tests.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("webhook URL {0}")]
    Url(String),
    #[error(
        "webhook host {host:?} resolves to {addr}, a {class} address; refused (add it to the allow-list if intended)"
    )]
    Address { host: String, addr: IpAddr, class: &'static str },
    #[error("webhook host {0:?} does not resolve")]
    Unresolved(String),
}

/// Why an address is not a public unicast destination, or `None` if it is.
pub fn forbidden_class(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_class(v4),
        IpAddr::V6(v6) => v6_class(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], bits: u32) -> bool {
    let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
    (u32::from(ip) & mask) == (u32::from(Ipv4Addr::from(net)) & mask)
}

fn v4_class(ip: Ipv4Addr) -> Option<&'static str> {
    const METADATA: [[u8; 4]; 2] = [[169, 254, 169, 254], [100, 100, 100, 200]];
    if METADATA.iter().any(|m| ip == Ipv4Addr::from(*m)) {
        return Some("cloud metadata");
    }
    let table: &[([u8; 4], u32, &'static str)] = &[
        ([0, 0, 0, 0], 8, "unspecified (\"this network\")"),
        ([127, 0, 0, 0], 8, "loopback"),
        ([10, 0, 0, 0], 8, "private"),
        ([172, 16, 0, 0], 12, "private"),
        ([192, 168, 0, 0], 16, "private"),
        ([169, 254, 0, 0], 16, "link-local"),
        ([100, 64, 0, 0], 10, "carrier-grade NAT"),
        ([192, 0, 0, 0], 24, "IETF protocol assignment"),
        ([198, 18, 0, 0], 15, "benchmarking"),
        ([224, 0, 0, 0], 4, "multicast"),
        ([240, 0, 0, 0], 4, "reserved"),
    ];
    table.iter().find(|(net, bits, _)| in_v4(ip, *net, *bits)).map(|(_, _, c)| *c)
}

fn v6_class(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    if ip.to_ipv4_mapped().is_some() {
        return Some("IPv4-mapped");
    }
    // NAT64 (64:ff9b::/96 well-known, 64:ff9b:1::/48 local): the IPv4 address it reaches.
    if s[0] == 0x64 && s[1] == 0xff9b && (s[2..6] == [0, 0, 0, 0] || s[2] == 1) {
        let o = ip.octets();
        return v4_class(Ipv4Addr::new(o[12], o[13], o[14], o[15])).map(|_| "NAT64 to an internal IPv4");
    }
    if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        return Some("cloud metadata");
    }
    if (s[0] & 0xfe00) == 0xfc00 {
        return Some("private (unique local)");
    }
    if (s[0] & 0xffc0) == 0xfe80 {
        return Some("link-local");
    }
    if (s[0] & 0xff00) == 0xff00 {
        return Some("multicast");
    }
    // IPv4-compatible (deprecated ::a.b.c.d) and the discard prefix.
    if s[0..6] == [0, 0, 0, 0, 0, 0] || s[0..4] == [0x100, 0, 0, 0] {
        return Some("reserved");
    }
    None
}

/// An allow-list entry: an address block in CIDR form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    bits: u32,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let bad = || format!("allow-list entry {s:?} is not an address block like 127.0.0.1/32 or ::1/128");
        let (addr, bits) = match s.trim().split_once('/') {
            Some((a, b)) => (a.parse::<IpAddr>().map_err(|_| bad())?, Some(b.parse::<u32>().map_err(|_| bad())?)),
            None => (s.trim().parse::<IpAddr>().map_err(|_| bad())?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = bits.unwrap_or(max);
        if bits > max {
            return Err(bad());
        }
        Ok(Cidr { net: addr, bits })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => in_v4(i, n.octets(), self.bits),
            (IpAddr::V6(n), IpAddr::V6(i)) => {
                let mask = if self.bits == 0 { 0 } else { u128::MAX << (128 - self.bits) };
                (u128::from(i) & mask) == (u128::from(n) & mask)
            }
            _ => false,
        }
    }
}

/// Where to deliver: the URL and the checked addresses to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub url: url::Url,
    pub host: String,
    pub addrs: Vec<SocketAddr>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Guard {
    allow: Vec<Cidr>,
}

impl Guard {
    /// `allow`: comma-separated CIDR blocks that may be reached although internal.
    pub fn new(allow: &str) -> Result<Guard, String> {
        let allow = allow.split(',').filter(|s| !s.trim().is_empty()).map(Cidr::parse).collect::<Result<_, _>>()?;
        Ok(Guard { allow })
    }

    pub fn check_ip(&self, host: &str, ip: IpAddr) -> Result<(), Refused> {
        match forbidden_class(ip) {
            Some(class) if !self.allow.iter().any(|c| c.contains(ip)) => {
                Err(Refused::Address { host: host.to_string(), addr: ip, class })
            }
            _ => Ok(()),
        }
    }

    /// Checks the URL's form (http or https, a host, no credentials in it).
    pub fn parse_url(url: &str) -> Result<(url::Url, String, u16), Refused> {
        let u = url::Url::parse(url).map_err(|e| Refused::Url(format!("{url:?} is not a URL: {e}")))?;
        if !matches!(u.scheme(), "http" | "https") {
            return Err(Refused::Url(format!("{url:?} must be http or https")));
        }
        if !u.username().is_empty() || u.password().is_some() {
            return Err(Refused::Url(format!("{url:?} must not carry credentials; use the signing secret")));
        }
        let host = match u.host() {
            Some(url::Host::Domain(d)) => d.to_string(),
            Some(url::Host::Ipv4(a)) => a.to_string(),
            Some(url::Host::Ipv6(a)) => a.to_string(),
            None => return Err(Refused::Url(format!("{url:?} has no host"))),
        };
        let port = u.port_or_known_default().unwrap_or(80);
        Ok((u, host, port))
    }

    /// Resolves the URL's host and checks every address it resolves to.
    pub async fn resolve(&self, url: &str) -> Result<Target, Refused> {
        let (url, host, port) = Self::parse_url(url)?;
        let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((host.as_str(), port))
                .await
                .map_err(|_| Refused::Unresolved(host.clone()))?
                .collect(),
        };
        if addrs.is_empty() {
            return Err(Refused::Unresolved(host));
        }
        for a in &addrs {
            self.check_ip(&host, a.ip())?;
        }
        Ok(Target { url, host, addrs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_internal_class_is_refused_and_public_addresses_pass() {
        let table: &[(&str, Option<&str>)] = &[
            ("127.0.0.1", Some("loopback")),
            ("127.255.1.2", Some("loopback")),
            ("::1", Some("loopback")),
            ("10.1.2.3", Some("private")),
            ("172.16.0.1", Some("private")),
            ("172.31.255.255", Some("private")),
            ("192.168.1.1", Some("private")),
            ("fd12:3456::1", Some("private (unique local)")),
            ("169.254.10.20", Some("link-local")),
            ("fe80::1", Some("link-local")),
            ("169.254.169.254", Some("cloud metadata")),
            ("100.100.100.200", Some("cloud metadata")),
            ("fd00:ec2::254", Some("cloud metadata")),
            ("100.64.0.1", Some("carrier-grade NAT")),
            ("100.127.255.254", Some("carrier-grade NAT")),
            ("::ffff:127.0.0.1", Some("IPv4-mapped")),
            ("::ffff:10.0.0.1", Some("IPv4-mapped")),
            ("64:ff9b::10.0.0.1", Some("NAT64 to an internal IPv4")),
            ("64:ff9b::169.254.169.254", Some("NAT64 to an internal IPv4")),
            ("0.0.0.0", Some("unspecified (\"this network\")")),
            ("::", Some("unspecified")),
            ("224.0.0.1", Some("multicast")),
            ("255.255.255.255", Some("reserved")),
            ("8.8.8.8", None),
            ("172.32.0.1", None),
            ("100.128.0.1", None),
            ("2606:4700:4700::1111", None),
            ("64:ff9b::8.8.8.8", None),
        ];
        for (addr, want) in table {
            assert_eq!(forbidden_class(addr.parse().unwrap()), *want, "{addr}");
        }
    }

    #[tokio::test]
    async fn names_are_resolved_and_every_answer_checked() {
        let strict = Guard::default();
        // "localhost" resolves to loopback without any network.
        let e = strict.resolve("http://localhost:9/hook").await.unwrap_err();
        assert!(matches!(e, Refused::Address { class: "loopback", .. }), "{e}");
        assert!(e.to_string().contains("localhost"), "{e}");
        let e = strict.resolve("http://[::ffff:127.0.0.1]:9/").await.unwrap_err();
        assert!(matches!(e, Refused::Address { class: "IPv4-mapped", .. }), "{e}");
        let loopback = Guard::new("127.0.0.0/8, ::1/128").unwrap();
        let t = loopback.resolve("http://127.0.0.1:9/hook?x=1").await.unwrap();
        assert_eq!(t.addrs, vec!["127.0.0.1:9".parse().unwrap()]);
        assert!(loopback.resolve("http://10.0.0.1/").await.is_err(), "the allow-list admits only what it names");
        assert!(loopback.resolve("http://localhost:9/").await.is_ok());
    }

    #[test]
    fn urls_and_allow_lists_are_checked() {
        assert!(matches!(Guard::parse_url("ftp://example.com/"), Err(Refused::Url(_))));
        assert!(matches!(Guard::parse_url("https://user:pw@example.com/"), Err(Refused::Url(_))));
        assert!(matches!(Guard::parse_url("not a url"), Err(Refused::Url(_))));
        assert_eq!(Guard::parse_url("https://example.com/h").unwrap().2, 443);
        assert!(Guard::new("127.0.0.1/33").unwrap_err().contains("127.0.0.1/33"));
        assert!(Guard::new("localhost").is_err());
        assert!(Cidr::parse("10.0.0.0/8").unwrap().contains("10.9.8.7".parse().unwrap()));
        assert!(!Cidr::parse("10.0.0.0/8").unwrap().contains("11.0.0.1".parse().unwrap()));
    }
}
