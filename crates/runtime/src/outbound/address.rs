//! Classifies IP addresses: which destinations a guest may never reach (private networks,
//! loopback, link-local and cloud metadata, ...) unless the operator allows a range.
//!
//! IPv4 is allowed unless it falls in a special-purpose range. IPv6 is deny-by-default: only
//! global unicast (`2000::/3`) minus its special ranges is allowed, and the forms that embed an
//! IPv4 address (mapped, compatible, NAT64) are judged by the IPv4 address they reach.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Why an address is refused; the text goes into the guest's `denied` message.
pub fn blocked_reason(ip: IpAddr, allowed: &[IpNet]) -> Option<&'static str> {
    let reason = classify(ip)?;
    // Never a unicast destination, whatever the operator allowed: 0.0.0.0 and :: mean "this
    // host" to the kernel, and multicast/broadcast are not something a connector calls.
    if matches!(
        reason,
        Class::Unspecified | Class::Multicast | Class::Broadcast
    ) {
        return Some(reason.text());
    }
    let embedded = embedded_ipv4(ip).map(IpAddr::V4);
    let is_allowed = |candidate: IpAddr| allowed.iter().any(|net| net.contains(&candidate));
    if is_allowed(ip) || embedded.is_some_and(is_allowed) {
        return None;
    }
    Some(reason.text())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Unspecified,
    Loopback,
    Private,
    LinkLocal,
    SharedAddressSpace,
    Multicast,
    Broadcast,
    Reserved,
    UniqueLocal,
    NotGlobal,
}

impl Class {
    fn text(self) -> &'static str {
        match self {
            Class::Unspecified => "an unspecified address",
            Class::Loopback => "a loopback address",
            Class::Private => "a private address",
            Class::LinkLocal => "a link-local or metadata address",
            Class::SharedAddressSpace => "a carrier-grade NAT address",
            Class::Multicast => "a multicast address",
            Class::Broadcast => "the broadcast address",
            Class::Reserved => "a reserved or documentation address",
            Class::UniqueLocal => "a unique local address",
            Class::NotGlobal => "not a global unicast address",
        }
    }
}

fn classify(ip: IpAddr) -> Option<Class> {
    match ip {
        IpAddr::V4(ip) => classify_v4(ip),
        IpAddr::V6(ip) => classify_v6(ip),
    }
}

const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Ipv4Net {
    match Ipv4Net::new(Ipv4Addr::new(a, b, c, d), prefix) {
        Ok(net) => net,
        Err(_) => panic!("bad constant network"),
    }
}

/// IANA IPv4 special-purpose registry, the entries that are not globally reachable.
const V4_BLOCKED: &[(Ipv4Net, Class)] = &[
    (v4(0, 0, 0, 0, 8), Class::Unspecified),
    (v4(10, 0, 0, 0, 8), Class::Private),
    (v4(100, 64, 0, 0, 10), Class::SharedAddressSpace),
    (v4(127, 0, 0, 0, 8), Class::Loopback),
    (v4(169, 254, 0, 0, 16), Class::LinkLocal),
    (v4(172, 16, 0, 0, 12), Class::Private),
    // Includes 192.0.0.192, Oracle Cloud's metadata service.
    (v4(192, 0, 0, 0, 24), Class::Reserved),
    (v4(192, 0, 2, 0, 24), Class::Reserved),
    (v4(192, 88, 99, 0, 24), Class::Reserved),
    (v4(192, 168, 0, 0, 16), Class::Private),
    (v4(198, 18, 0, 0, 15), Class::Reserved),
    (v4(198, 51, 100, 0, 24), Class::Reserved),
    (v4(203, 0, 113, 0, 24), Class::Reserved),
    (v4(224, 0, 0, 0, 4), Class::Multicast),
    (v4(255, 255, 255, 255, 32), Class::Broadcast),
    (v4(240, 0, 0, 0, 4), Class::Reserved),
];

fn classify_v4(ip: Ipv4Addr) -> Option<Class> {
    V4_BLOCKED
        .iter()
        .find(|(net, _)| net.contains(&ip))
        .map(|(_, class)| *class)
}

const fn v6(segments: [u16; 8], prefix: u8) -> Ipv6Net {
    let [a, b, c, d, e, f, g, h] = segments;
    match Ipv6Net::new(Ipv6Addr::new(a, b, c, d, e, f, g, h), prefix) {
        Ok(net) => net,
        Err(_) => panic!("bad constant network"),
    }
}

/// Ranges inside 2000::/3 that are not globally reachable (or tunnel to IPv4 in ways we cannot
/// check, like Teredo and 6to4).
const V6_BLOCKED_IN_GLOBAL: &[Ipv6Net] = &[
    // IETF protocol assignments: Teredo (2001::/32), benchmarking, ORCHID, ...
    v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23),
    // Documentation.
    v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32),
    v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20),
    // 6to4: relays are deprecated (RFC 7526) and the embedded IPv4 may be private.
    v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16),
];

const V6_GLOBAL_UNICAST: Ipv6Net = v6([0x2000, 0, 0, 0, 0, 0, 0, 0], 3);
const V6_UNIQUE_LOCAL: Ipv6Net = v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7);
const V6_LINK_LOCAL: Ipv6Net = v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10);
const V6_MULTICAST: Ipv6Net = v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8);
const V6_NAT64: Ipv6Net = v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96);

fn classify_v6(ip: Ipv6Addr) -> Option<Class> {
    if ip.is_unspecified() {
        return Some(Class::Unspecified);
    }
    if ip.is_loopback() {
        return Some(Class::Loopback);
    }
    // ::ffff:a.b.c.d, ::a.b.c.d and 64:ff9b::a.b.c.d reach a.b.c.d: judge that.
    if let Some(embedded) = embedded_ipv4(IpAddr::V6(ip)) {
        return classify_v4(embedded);
    }
    if V6_MULTICAST.contains(&ip) {
        return Some(Class::Multicast);
    }
    // fd00:ec2::254 (AWS metadata over IPv6) is in here.
    if V6_UNIQUE_LOCAL.contains(&ip) {
        return Some(Class::UniqueLocal);
    }
    if V6_LINK_LOCAL.contains(&ip) {
        return Some(Class::LinkLocal);
    }
    if !V6_GLOBAL_UNICAST.contains(&ip) {
        return Some(Class::NotGlobal);
    }
    if V6_BLOCKED_IN_GLOBAL.iter().any(|net| net.contains(&ip)) {
        return Some(Class::Reserved);
    }
    None
}

/// The IPv4 address an IPv6 address stands for, for the forms a kernel or a NAT64 gateway
/// would actually route to that IPv4 address.
fn embedded_ipv4(ip: IpAddr) -> Option<Ipv4Addr> {
    let IpAddr::V6(ip) = ip else { return None };
    if let Some(mapped) = ip.to_ipv4_mapped() {
        return Some(mapped);
    }
    let segments = ip.segments();
    // Deprecated IPv4-compatible form ::a.b.c.d (but not :: and ::1, handled as themselves).
    let compatible =
        segments[..6].iter().all(|s| *s == 0) && !ip.is_loopback() && !ip.is_unspecified();
    if compatible || V6_NAT64.contains(&ip) {
        let octets = ip.octets();
        return Some(Ipv4Addr::new(
            octets[12], octets[13], octets[14], octets[15],
        ));
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;

    fn blocked(text: &str) -> bool {
        blocked_reason(text.parse().unwrap(), &[]).is_some()
    }

    #[test]
    fn blocks_non_public_ipv4() {
        for ip in [
            "0.0.0.0",
            "0.1.2.3",
            "10.1.2.3",
            "100.64.0.1",
            "100.100.100.200",
            "127.0.0.1",
            "127.255.255.254",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.192",
            "192.0.2.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.51.100.1",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            assert!(blocked(ip), "{ip} should be blocked");
        }
    }

    #[test]
    fn allows_public_ipv4() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "140.82.112.5",
            "172.32.0.1",
            "100.128.0.1",
            "192.0.3.1",
        ] {
            assert!(!blocked(ip), "{ip} should be allowed");
        }
    }

    #[test]
    fn blocks_non_public_ipv6_and_embedded_ipv4() {
        for ip in [
            "::",
            "::1",
            "fe80::1",
            "fd00:ec2::254",
            "fc00::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "::10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::7f00:1",
            "2001:db8::1",
            "2001::1",
            "2002:7f00:1::1",
            "100::1",
            "fec0::1",
            "3fff::1",
            "::2:3:4:5:6",
            "4000::1",
        ] {
            assert!(blocked(ip), "{ip} should be blocked");
        }
    }

    #[test]
    fn allows_public_ipv6_and_embedded_public_ipv4() {
        for ip in [
            "2606:4700::1111",
            "2a00:1450:4001::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert!(!blocked(ip), "{ip} should be allowed");
        }
    }

    #[test]
    fn operator_ranges_unblock_private_but_never_unspecified_or_multicast() {
        let allowed: Vec<IpNet> =
            vec!["127.0.0.0/8".parse().unwrap(), "0.0.0.0/0".parse().unwrap()];
        let check = |ip: &str| blocked_reason(ip.parse().unwrap(), &allowed);
        assert_eq!(check("127.0.0.1"), None);
        assert_eq!(check("::ffff:127.0.0.1"), None);
        assert_eq!(check("10.0.0.1"), None);
        assert!(check("0.0.0.0").is_some());
        assert!(check("224.0.0.1").is_some());
        assert!(check("255.255.255.255").is_some());
        // An IPv4 range does not unblock IPv6 loopback.
        assert!(check("::1").is_some());
    }
}
