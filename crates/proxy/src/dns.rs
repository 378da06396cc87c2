//! The DNS proxy (Istio's, `ISTIO_META_DNS_CAPTURE`): `meshwork iptables --redirect-dns`
//! sends the workload's DNS (UDP and TCP port 53) to it. It answers A and AAAA queries
//! for the mesh's names from the name table the control plane sent (Service cluster IPs,
//! ServiceEntry addresses, and the addresses allocated to ServiceEntries without any),
//! under every name a client of its namespace may use. Every other query goes to the
//! resolver the workload was given (`resolv.conf`), over the transport it came on, and
//! its answer comes back as it was: headless Services and pod names stay the cluster
//! DNS's, as with Istio's DNS proxy.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use meshwork_resources::dns::NameTable;
use simple_dns::rdata::{A, AAAA, RData};
use simple_dns::{CLASS, Packet, PacketFlag, QTYPE, RCODE, ResourceRecord, TYPE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{debug, info, warn};

use crate::Shared;

/// How long clients may keep an answer (Istio's DNS proxy gives 30 s).
const TTL: u32 = 30;

/// How long the workload's resolver may take to answer a forwarded query.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// What to do with a query.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// This reply.
    Local(Vec<u8>),
    /// Not the mesh's: ask the workload's resolver.
    Forward,
    /// Not a DNS query: no answer.
    Drop,
}

/// The name a query asks about, lower case, without the final dot.
fn normalized(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// The answer to `query` from `names`.
pub fn answer(query: &[u8], names: Option<&NameTable>) -> Answer {
    let Ok(packet) = Packet::parse(query) else {
        return Answer::Drop;
    };
    if packet.has_flags(PacketFlag::RESPONSE) {
        return Answer::Drop;
    }
    let (Some(names), [question]) = (names, packet.questions.as_slice()) else {
        return Answer::Forward;
    };
    let name = normalized(&question.qname.to_string());
    let Some(addresses) = names.hosts.get(&name) else {
        return Answer::Forward;
    };
    let mut records = Vec::new();
    for address in addresses.iter().filter_map(|a| a.parse::<IpAddr>().ok()) {
        let rdata = match (question.qtype, address) {
            (QTYPE::TYPE(TYPE::A), IpAddr::V4(v4)) => RData::A(A {
                address: u32::from(v4),
            }),
            (QTYPE::TYPE(TYPE::AAAA), IpAddr::V6(v6)) => RData::AAAA(AAAA {
                address: u128::from(v6),
            }),
            _ => continue,
        };
        records.push(ResourceRecord::new(
            question.qname.clone(),
            CLASS::IN,
            TTL,
            rdata,
        ));
    }
    // A known name without an address of the kind asked for has no data (NOERROR).
    Answer::Local(reply(&packet, RCODE::NoError, records))
}

/// A reply to `query` with this code and these answers.
fn reply<'a>(query: &Packet<'a>, code: RCODE, answers: Vec<ResourceRecord<'a>>) -> Vec<u8> {
    let mut out = Packet::new_reply(query.id());
    out.set_flags(PacketFlag::AUTHORITATIVE_ANSWER | PacketFlag::RECURSION_AVAILABLE);
    if query.has_flags(PacketFlag::RECURSION_DESIRED) {
        out.set_flags(PacketFlag::RECURSION_DESIRED);
    }
    *out.rcode_mut() = code;
    out.questions = query.questions.clone();
    out.answers = answers;
    out.build_bytes_vec().unwrap_or_default()
}

/// A SERVFAIL for `query`, when the workload's resolver did not answer.
fn server_failure(query: &[u8]) -> Option<Vec<u8>> {
    let packet = Packet::parse(query).ok()?;
    Some(reply(&packet, RCODE::ServerFailure, Vec::new()))
}

/// The nameservers of a `resolv.conf`.
pub fn nameservers(resolv_conf: &str) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.trim().parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// Asks the workload's resolvers, in turn, over UDP.
async fn forward(query: &[u8], upstreams: &[SocketAddr]) -> Option<Vec<u8>> {
    for upstream in upstreams {
        let bind: SocketAddr = if upstream.is_ipv4() {
            "0.0.0.0:0".parse().expect("an address")
        } else {
            "[::]:0".parse().expect("an address")
        };
        let Ok(socket) = tokio::net::UdpSocket::bind(bind).await else {
            continue;
        };
        if socket.send_to(query, upstream).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; 65535];
        match tokio::time::timeout(UPSTREAM_TIMEOUT, socket.recv_from(&mut buf)).await {
            Ok(Ok((n, from))) if from == *upstream => return Some(buf[..n].to_vec()),
            _ => debug!(%upstream, "the workload's resolver did not answer"),
        }
    }
    None
}

/// Asks the workload's resolvers, in turn, over TCP (a query that came over TCP, after
/// a truncated answer over UDP, wants the whole answer).
async fn forward_tcp(query: &[u8], upstreams: &[SocketAddr]) -> Option<Vec<u8>> {
    let len = u16::try_from(query.len()).ok()?;
    for upstream in upstreams {
        let asked = async {
            let mut stream = tokio::net::TcpStream::connect(upstream).await?;
            stream.write_all(&len.to_be_bytes()).await?;
            stream.write_all(query).await?;
            let mut n = [0u8; 2];
            stream.read_exact(&mut n).await?;
            let mut reply = vec![0u8; usize::from(u16::from_be_bytes(n))];
            stream.read_exact(&mut reply).await?;
            Ok::<_, std::io::Error>(reply)
        };
        match tokio::time::timeout(UPSTREAM_TIMEOUT, asked).await {
            Ok(Ok(reply)) => return Some(reply),
            _ => debug!(%upstream, "the workload's resolver did not answer over TCP"),
        }
    }
    None
}

/// The reply to one query: from the name table in force, else from the resolvers.
async fn resolve(
    query: &[u8],
    shared: &Shared,
    upstreams: &[SocketAddr],
    tcp: bool,
) -> Option<Vec<u8>> {
    let state = shared.state.load();
    match answer(query, state.config.names.as_ref()) {
        Answer::Local(reply) => Some(reply),
        Answer::Drop => None,
        Answer::Forward => {
            let reply = if tcp {
                forward_tcp(query, upstreams).await
            } else {
                forward(query, upstreams).await
            };
            reply.or_else(|| server_failure(query))
        }
    }
}

/// The DNS proxy's sockets, UDP and TCP on one address.
pub struct Sockets {
    udp: tokio::net::UdpSocket,
    tcp: tokio::net::TcpListener,
}

/// Binds the DNS proxy's address, UDP and TCP.
pub async fn bind(addr: SocketAddr) -> std::io::Result<Sockets> {
    Ok(Sockets {
        udp: tokio::net::UdpSocket::bind(addr).await?,
        tcp: tokio::net::TcpListener::bind(addr).await?,
    })
}

/// Serves DNS on `sockets` until the process ends, forwarding what is not the mesh's to
/// `upstreams`.
pub async fn serve(sockets: Sockets, shared: Arc<Shared>, upstreams: Vec<SocketAddr>) {
    let Sockets { udp, tcp } = sockets;
    let udp = Arc::new(udp);
    info!(addr = ?udp.local_addr().ok(), ?upstreams, "DNS proxy listening");
    let upstreams = Arc::new(upstreams);
    {
        let (shared, upstreams) = (shared.clone(), upstreams.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = tcp.accept().await else {
                    continue;
                };
                let (shared, upstreams) = (shared.clone(), upstreams.clone());
                tokio::spawn(async move {
                    if let Err(e) = serve_tcp(stream, &shared, &upstreams).await {
                        debug!("DNS over TCP: {e}");
                    }
                });
            }
        });
    }
    let mut buf = vec![0u8; 65535];
    loop {
        let (n, client) = match udp.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                warn!("DNS proxy: {e}");
                continue;
            }
        };
        let query = buf[..n].to_vec();
        let (udp, shared, upstreams) = (udp.clone(), shared.clone(), upstreams.clone());
        tokio::spawn(async move {
            if let Some(reply) = resolve(&query, &shared, &upstreams, false).await {
                let _ = udp.send_to(&reply, client).await;
            }
        });
    }
}

/// Queries on one TCP connection, each after its two-byte length.
async fn serve_tcp(
    mut stream: tokio::net::TcpStream,
    shared: &Shared,
    upstreams: &[SocketAddr],
) -> std::io::Result<()> {
    loop {
        let mut len = [0u8; 2];
        if stream.read_exact(&mut len).await.is_err() {
            return Ok(());
        }
        let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut query).await?;
        let Some(reply) = resolve(&query, shared, upstreams, true).await else {
            return Ok(());
        };
        let Ok(n) = u16::try_from(reply.len()) else {
            return Ok(());
        };
        stream.write_all(&n.to_be_bytes()).await?;
        stream.write_all(&reply).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use simple_dns::{Name, QCLASS, Question};

    fn table() -> NameTable {
        NameTable {
            hosts: [
                ("reviews", vec!["10.96.0.12"]),
                ("reviews.default.svc.cluster.local", vec!["10.96.0.12"]),
                ("dual.example.com", vec!["240.240.0.7", "2001:db8::7"]),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.into_iter().map(str::to_string).collect()))
            .collect(),
        }
    }

    fn query(name: &str, qtype: TYPE) -> Vec<u8> {
        let mut q = Packet::new_query(7);
        q.set_flags(PacketFlag::RECURSION_DESIRED);
        q.questions.push(Question::new(
            Name::new_unchecked(name),
            QTYPE::TYPE(qtype),
            QCLASS::CLASS(CLASS::IN),
            false,
        ));
        q.build_bytes_vec().unwrap()
    }

    fn local(bytes: Vec<u8>) -> (RCODE, Vec<String>) {
        let table = table();
        let Answer::Local(reply) = answer(&bytes, Some(&table)) else {
            panic!("answered locally");
        };
        let p = Packet::parse(&reply).unwrap();
        assert_eq!(p.id(), 7);
        assert!(p.has_flags(PacketFlag::RESPONSE | PacketFlag::AUTHORITATIVE_ANSWER));
        let addresses = p
            .answers
            .iter()
            .map(|r| match &r.rdata {
                RData::A(a) => std::net::Ipv4Addr::from(a.address).to_string(),
                RData::AAAA(a) => std::net::Ipv6Addr::from(a.address).to_string(),
                other => format!("{other:?}"),
            })
            .collect();
        (p.rcode(), addresses)
    }

    #[test]
    fn mesh_names_are_answered_and_the_rest_forwarded() {
        assert_eq!(
            local(query("reviews", TYPE::A)),
            (RCODE::NoError, vec!["10.96.0.12".to_string()])
        );
        assert_eq!(
            local(query("Reviews.Default.svc.cluster.local.", TYPE::A)),
            (RCODE::NoError, vec!["10.96.0.12".to_string()])
        );
        assert_eq!(
            local(query("dual.example.com", TYPE::AAAA)),
            (RCODE::NoError, vec!["2001:db8::7".to_string()])
        );
        // A known name with nothing of the kind asked for: no data.
        assert_eq!(
            local(query("reviews", TYPE::AAAA)),
            (RCODE::NoError, vec![])
        );
        assert_eq!(local(query("reviews", TYPE::MX)), (RCODE::NoError, vec![]));
        // Anything else is the workload's resolver's, under the cluster's domain too
        // (headless Services, pod names).
        let table = table();
        assert_eq!(
            answer(
                &query("db-0.db.default.svc.cluster.local", TYPE::A),
                Some(&table)
            ),
            Answer::Forward
        );
        assert_eq!(
            answer(&query("example.org", TYPE::A), Some(&table)),
            Answer::Forward
        );
        assert_eq!(answer(&query("reviews", TYPE::A), None), Answer::Forward);
    }

    #[test]
    fn what_is_not_a_query_gets_no_answer() {
        let table = table();
        let mut response = Packet::new_reply(1);
        response.questions.push(Question::new(
            Name::new_unchecked("reviews"),
            QTYPE::TYPE(TYPE::A),
            QCLASS::CLASS(CLASS::IN),
            false,
        ));
        let response = response.build_bytes_vec().unwrap();
        assert_eq!(answer(&response, Some(&table)), Answer::Drop);
        let good = query("reviews", TYPE::A);
        for n in 0..good.len() {
            // Truncated, and garbage: never a panic.
            let _ = answer(&good[..n], Some(&table));
        }
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..20_000 {
            let mut bytes = good.clone();
            for _ in 0..3 {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let i = (rng as usize) % bytes.len();
                bytes[i] = (rng >> 32) as u8;
            }
            let _ = answer(&bytes, Some(&table));
        }
    }

    #[test]
    fn nameservers_come_from_resolv_conf() {
        let conf = "# comment\nsearch default.svc.cluster.local\nnameserver 10.0.0.10\nnameserver  fd00::a \noptions ndots:5\nnameserver bogus\n";
        assert_eq!(
            nameservers(conf),
            [
                "10.0.0.10:53".parse::<SocketAddr>().unwrap(),
                "[fd00::a]:53".parse().unwrap()
            ]
        );
    }
}
