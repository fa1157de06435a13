//! Attack review of c3bc90c (atk26b): the per-address limits key an IPv6 address by its /64
//! (`address_key`). Prefixes under which one /64 is NOT one host or LAN: IPv4 clients seen
//! through a stateless translator (SIIT-DC, RFC 7755 / 6052: an IPv6-only server sees every
//! IPv4 client as 64:ff9b::a.b.c.d, one /96 of one /64), Teredo (2001:0:<server v4>:<flags>
//! is the /64 of every client of one Teredo server), and link-local fe80::/64 (every link,
//! every interface: the scope id is not in the key). Before c3bc90c each was keyed per
//! address. Fixed: `address_key` keys the first two by the IPv4 address they embed
//! (`rate::embedded_ipv4`), and a link-local address whole; `rate::host_of` alike.

use super::limit_tests::request;
use super::*;
use crate::info::DATAGRAM_SIZE_MTU_1500;
use crate::testkit::sample_info;

/// (offers, limited rejects) of one request from each of `clients`, all at once.
fn atk26b_requests(clients: &[SocketAddr]) -> (usize, usize, Endpoint) {
    let mut config = EndpointConfig::new("[2001:db8::1]:7700".parse().unwrap());
    config.adaptive = Some(RateConfig::default());
    let mut endpoint = Endpoint::new(config, SeededRng::from_u64(7), Instant::ZERO);
    let mut file = sample_info(1_000_000, DATAGRAM_SIZE_MTU_1500, 1);
    let name = file.name.clone();
    let (mut offers, mut limited) = (0, 0);
    for (i, &client) in clients.iter().enumerate() {
        let now = Instant::ZERO + Duration::from_millis(10 + i as u64);
        endpoint.handle_control(now, client, &request(i as u64 + 1, &name), &mut file);
        while let Some(t) = endpoint.poll_transmit() {
            match ControlMessage::parse(&t.bytes) {
                Ok(ControlMessage::Offer { .. }) => offers += 1,
                Ok(ControlMessage::Reject {
                    code: RejectCode::Limited,
                    ..
                }) => limited += 1,
                _ => {}
            }
        }
        while endpoint.poll_command().is_some() {}
        while endpoint.poll_event().is_some() {}
        endpoint.assert_invariants();
    }
    (offers, limited, endpoint)
}

/// H1 (medium, deployment-dependent; new in c3bc90c): 40 distinct IPv4 users reaching an
/// IPv6-only server through SIIT (64:ff9b::/96), 40 Teredo users of one Teredo server, and 40
/// hosts on 40 different links by link-local address, one request each: each group is ONE
/// address to the limits (16 sessions, 10 requests/s, one NAK budget), so 24 of 40 are
/// refused, and one attacker among them locks all the others out with 16 sessions. Before
/// c3bc90c: 40 of 40 served. Fixed: 40 of 40, and each group's users are 40 hosts.
#[test]
fn atk26b_distinct_hosts_under_one_slash_64_are_not_one_address() {
    let siit: Vec<SocketAddr> = (0..40u32)
        .map(|i| {
            let v4 = u32::from(Ipv4Addr::new(198, 51, 100, 1)) + i * 7919;
            let v6 = (0x64_ff9b_u128 << 96) | u128::from(v4);
            SocketAddr::new(IpAddr::V6(v6.into()), 40_000)
        })
        .collect();
    let teredo: Vec<SocketAddr> = (0..40u32)
        .map(|i| {
            // 2001:0:<server 192.0.2.45>:<flags 0>:<port ^ ffff>:<client v4 ^ ffffffff>
            let server = u128::from(u32::from(Ipv4Addr::new(192, 0, 2, 45)));
            let client = u128::from(!(u32::from(Ipv4Addr::new(203, 0, 113, 0)) + i));
            let v6 = (0x2001_0000_u128 << 96) | (server << 64) | (0xbeef_u128 << 32) | client;
            SocketAddr::new(IpAddr::V6(v6.into()), 40_000)
        })
        .collect();
    let link_local: Vec<SocketAddr> = (0..40u32)
        .map(|i| {
            let v6 = (0xfe80_u128 << 112) | 0x0200_5eff_fe00_0000 | u128::from(i);
            SocketAddr::V6(std::net::SocketAddrV6::new(v6.into(), 40_000, 0, 2 + i))
        })
        .collect();
    let mut served = Vec::new();
    for (label, clients) in [
        ("SIIT 64:ff9b::/96 (40 IPv4 users)", &siit),
        ("Teredo, one server (40 users)", &teredo),
        ("link-local, 40 links (scope ids)", &link_local),
    ] {
        let (offers, limited, endpoint) = atk26b_requests(clients);
        eprintln!(
            "{label}: {offers} of {} served, {limited} refused Limited, {} sessions, {} address entries",
            clients.len(),
            endpoint.session_count(),
            endpoint.address_count(),
        );
        served.push(offers);
    }
    assert!(
        served.iter().all(|&s| s == 40),
        "distinct hosts served: {served:?} of 40 each"
    );
    for clients in [&siit, &teredo, &link_local] {
        let mut hosts: Vec<u64> = clients.iter().map(|c| rate::host_of(c.ip())).collect();
        hosts.sort_unstable();
        hosts.dedup();
        assert_eq!(hosts.len(), 40, "40 hosts to the majority fall too");
    }
    // And the embedded IPv4 client is that client: the same as reaching us over IPv4.
    assert_eq!(
        rate::address_key(siit[0].ip()),
        IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1))
    );
    assert_eq!(
        rate::host_of(teredo[0].ip()),
        rate::host_of(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 0)))
    );
}
