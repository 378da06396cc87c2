//! What the fuzz targets under `fuzz/` run: each hand-written parser of what a client or a
//! peer sends, fed arbitrary bytes, with the properties it must keep checked (a panic is a
//! finding). The corpora the fuzzer kept are replayed by this module's tests on every
//! test run, so what it found once stays fixed. Built for tests and for `cargo fuzz`
//! (which sets `cfg(fuzzing)`), never into the proxy.

use meshwork_resources::PathNormalization;
use meshwork_resources::dns::NameTable;

use crate::dns::{Answer, answer};
use crate::inspect::{
    PG_SSL_REQUEST, PostgresPreamble, looks_like_http, parse_client_hello, postgres_preamble,
};

/// A fuzz target: it panics when the bytes break a property.
pub type Target = fn(&[u8]);

/// The targets, by the name of their `fuzz/fuzz_targets/*.rs` file and corpus folder.
pub const TARGETS: [(&str, Target); 6] = [
    ("client_hello", client_hello),
    ("http_detection", http_detection),
    ("postgres_preamble", postgres_preamble_target),
    ("request_path", request_path),
    ("peer_metadata", peer_metadata),
    ("dns_query", dns_query),
];

/// The SNI inspector: no panic; a prefix of a ClientHello that parses is never an error
/// and never another ClientHello; what it finds is what rustls would serve.
pub fn client_hello(data: &[u8]) {
    let whole = parse_client_hello(data);
    if let Ok(Some(hello)) = &whole {
        if let Some(sni) = &hello.sni {
            assert!(!sni.is_empty() && sni.is_ascii(), "SNI {sni:?}");
        }
        let cut = data.len() / 2;
        match parse_client_hello(&data[..cut]) {
            Ok(None) => {}
            Ok(Some(early)) => assert_eq!(&early, hello, "a prefix found another hello"),
            Err(e) => panic!("a prefix of a ClientHello is an error: {e}"),
        }
    }
}

/// Protocol detection: every prefix decides at most once, and never changes its mind.
pub fn http_detection(data: &[u8]) {
    let mut decided = None;
    for n in 0..=data.len().min(32) {
        match (decided, looks_like_http(&data[..n])) {
            (None, d) => decided = d,
            (Some(was), Some(now)) => assert_eq!(was, now, "{data:?}"),
            (Some(_), None) => panic!("undecided again: {data:?}"),
        }
    }
}

/// PostgreSQL's preamble: decided once and for good, SSLRequest exactly when the bytes
/// start with it, TLS exactly when they start with a handshake record.
pub fn postgres_preamble_target(data: &[u8]) {
    let mut decided = PostgresPreamble::More;
    for n in 0..=data.len().min(16) {
        let now = postgres_preamble(&data[..n]);
        if decided != PostgresPreamble::More {
            assert_eq!(now, decided, "{data:?}");
        }
        decided = now;
    }
    let expected = match data.first() {
        None => PostgresPreamble::More,
        Some(0x16) => PostgresPreamble::Tls,
        Some(_) if data.starts_with(&PG_SSL_REQUEST) => PostgresPreamble::SslRequest,
        Some(_) if PG_SSL_REQUEST.starts_with(data) => PostgresPreamble::More,
        Some(_) => PostgresPreamble::Plain,
    };
    assert_eq!(postgres_preamble(data), expected, "{data:?}");
}

/// Path normalization, in every mode: the result is absolute, has no dot segments (nor
/// repeated slashes when they are merged), is its own normalization, and is still a
/// path a request can carry, so what is authorized is what is sent.
pub fn request_path(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The path as the codec gives it: without its query, nor a fragment.
    let Ok(target) = format!("/{text}").parse::<http::uri::PathAndQuery>() else {
        return;
    };
    let path = target.path().to_string();
    for mode in [
        PathNormalization::Base,
        PathNormalization::MergeSlashes,
        PathNormalization::DecodeAndMergeSlashes,
    ] {
        let out = crate::request::path::normalized(&path, mode);
        assert!(out.starts_with('/'), "{mode:?} {path:?} -> {out:?}");
        for segment in out.split('/') {
            let decoded = segment.replace("%2e", ".").replace("%2E", ".");
            assert!(
                decoded != "." && decoded != "..",
                "{mode:?} {path:?} -> {out:?} keeps a dot segment"
            );
        }
        if mode != PathNormalization::Base {
            assert!(!out.contains("//"), "{mode:?} {path:?} -> {out:?}");
        }
        assert!(
            out.parse::<http::uri::PathAndQuery>().is_ok(),
            "{mode:?} {path:?} -> {out:?} is no longer a request path"
        );
        let again = crate::request::path::normalized(&out, mode);
        assert_eq!(again, out, "{mode:?} {path:?}: normalized twice differs");
    }
    assert_eq!(
        crate::request::path::normalized(&path, PathNormalization::None),
        path
    );
}

/// Istio's peer metadata header (base64 of a protobuf Struct): no panic, whether the
/// bytes are the header or what it decodes to.
pub fn peer_metadata(data: &[u8]) {
    use base64::Engine as _;
    let _ = crate::peer::decode(data, "cluster.local");
    let encoded = base64::engine::general_purpose::STANDARD.encode(data);
    if let Some(workload) = crate::peer::decode(encoded.as_bytes(), "cluster.local") {
        assert!(
            workload.principal.is_empty() || workload.principal.starts_with("spiffe://"),
            "{workload:?}"
        );
    }
}

/// The DNS proxy: a local answer is a response to the query, with its id and question;
/// without a name table nothing is answered locally.
pub fn dns_query(data: &[u8]) {
    let mut names = NameTable::default();
    for name in [
        "reviews",
        "reviews.default",
        "reviews.default.svc.cluster.local",
    ] {
        names
            .hosts
            .insert(name.into(), vec!["10.96.0.7".into(), "fd00::7".into()]);
    }
    assert!(
        !matches!(answer(data, None), Answer::Local(_)),
        "answered without a name table"
    );
    if let Answer::Local(reply) = answer(data, Some(&names)) {
        let query = simple_dns::Packet::parse(data).expect("a query answered locally parses");
        let reply = simple_dns::Packet::parse(&reply).expect("the reply parses");
        assert_eq!(reply.id(), query.id());
        assert!(reply.has_flags(simple_dns::PacketFlag::RESPONSE));
        let asked = |p: &simple_dns::Packet| -> Vec<String> {
            p.questions
                .iter()
                .map(|q| format!("{} {:?} {:?}", q.qname, q.qtype, q.qclass))
                .collect()
        };
        assert_eq!(asked(&reply), asked(&query));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn corpus(target: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../fuzz/corpus")
            .join(target)
    }

    /// Every input the fuzzer kept still passes its target.
    #[test]
    fn every_kept_fuzz_input_still_passes() {
        for (target, run) in TARGETS {
            let dir = corpus(target);
            let entries = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            assert!(
                entries.len() >= 10,
                "{target}: only {} inputs kept in {}",
                entries.len(),
                dir.display()
            );
            for entry in entries {
                let data = std::fs::read(entry.path()).unwrap();
                let outcome = std::panic::catch_unwind(|| run(&data));
                assert!(
                    outcome.is_ok(),
                    "{target}: {} fails",
                    entry.path().display()
                );
            }
        }
    }

    /// Well-formed inputs pass every target, a locally answered DNS query included.
    #[test]
    fn well_formed_inputs_pass_the_targets() {
        client_hello(b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00");
        http_detection(b"GET / HTTP/1.1\r\n");
        postgres_preamble_target(&PG_SSL_REQUEST);
        request_path(b"a/%2e%2E/b//./c");
        assert_eq!(
            crate::request::path::normalized(
                "/a/%2e%2E/b//./c",
                PathNormalization::DecodeAndMergeSlashes
            ),
            "/b/c"
        );
        // A query the table answers goes through the reply's checks.
        let mut query = simple_dns::Packet::new_query(7);
        query.questions.push(simple_dns::Question::new(
            simple_dns::Name::new_unchecked("reviews.default"),
            simple_dns::TYPE::A.into(),
            simple_dns::CLASS::IN.into(),
            false,
        ));
        let bytes = query.build_bytes_vec().unwrap();
        assert!(matches!(
            answer(
                &bytes,
                Some(&{
                    let mut n = NameTable::default();
                    n.hosts
                        .insert("reviews.default".into(), vec!["10.96.0.7".into()]);
                    n
                })
            ),
            Answer::Local(_)
        ));
        dns_query(&bytes);
    }
}
