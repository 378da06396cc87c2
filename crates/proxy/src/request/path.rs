//! Path normalization before authorization and routing, as the mesh config's
//! `pathNormalization` asks (Envoy's `normalize_path`, `merge_slashes` and escaped-slash
//! handling): BASE, the default, decodes percent-encoded unreserved characters, takes a
//! backslash for a slash, and resolves `.` and `..` segments (RFC 3986), also when their
//! dots are encoded;
//! MERGE_SLASHES also merges repeated slashes; DECODE_AND_MERGE_SLASHES first decodes
//! `%2F` and `%5C` (and takes a backslash for a slash). The normalized path is the one
//! authorized, routed and sent upstream.

use http::Uri;
use meshwork_resources::PathNormalization;

/// Normalizes the request's path in place.
pub fn normalize(parts: &mut http::request::Parts, mode: PathNormalization) {
    let path = parts.uri.path();
    let cheap =
        !path.contains('%') && !path.contains("/.") && !path.contains("//") && !path.contains('\\');
    if mode == PathNormalization::None || cheap {
        return;
    }
    let normalized = normalized(path, mode);
    if normalized == path {
        return;
    }
    let pq = match parts.uri.query() {
        Some(q) => format!("{normalized}?{q}"),
        None => normalized,
    };
    let mut uri = http::uri::Parts::from(parts.uri.clone());
    if let Ok(p) = pq.parse() {
        uri.path_and_query = Some(p);
        if let Ok(u) = Uri::from_parts(uri) {
            parts.uri = u;
        }
    }
}

/// `path` normalized (a copy of it when it needs nothing).
pub(crate) fn normalized(path: &str, mode: PathNormalization) -> String {
    if mode == PathNormalization::None {
        return path.to_string();
    }
    let merge = matches!(
        mode,
        PathNormalization::MergeSlashes | PathNormalization::DecodeAndMergeSlashes
    );
    let decode_slashes = mode == PathNormalization::DecodeAndMergeSlashes;
    let needs = path.contains('%')
        || path.split('/').any(|seg| seg == "." || seg == "..")
        || (merge && path.contains("//"))
        || path.contains('\\');
    if !needs {
        return path.to_string();
    }
    // A backslash is a slash, as Envoy's normalization takes it.
    let mut p = decode_unreserved(path, decode_slashes).replace('\\', "/");
    if merge {
        while p.contains("//") {
            p = p.replace("//", "/");
        }
    }
    remove_dot_segments(&p)
}

/// Decodes `%XX` where the byte is an unreserved character (`A-Z a-z 0-9 - . _ ~`), and
/// `%2F` and `%5C` too when `slashes`; other escapes stay as they are.
fn decode_unreserved(path: &str, slashes: bool) -> String {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                let unreserved =
                    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
                // A hex digit that would complete an escape with a `%` before it stays
                // encoded: `%6%31` must not become `%61`, which a backend would decode
                // again (to `a`) after policies saw something else.
                let completes_escape = b.is_ascii_hexdigit()
                    && match out.as_bytes() {
                        [.., b'%'] => true,
                        [.., b'%', h] => h.is_ascii_hexdigit(),
                        _ => false,
                    };
                if (unreserved || (slashes && matches!(b, b'/' | b'\\'))) && !completes_escape {
                    out.push(b as char);
                    i += 3;
                    continue;
                }
            }
        }
        // Multi-byte characters are copied whole.
        let ch = path[i..].chars().next().unwrap_or('\u{fffd}');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// A segment that is a dot segment once `%2e` is decoded: `Some(1)` for `.`, `Some(2)`
/// for `..`.
fn dots(seg: &str) -> Option<usize> {
    match seg {
        "." => return Some(1),
        ".." => return Some(2),
        // At most `%2e%2e`; most segments have no `%` at all and cost no allocation.
        _ if seg.len() > 6 || !seg.contains('%') => return None,
        _ => {}
    }
    let decoded = seg.replace("%2e", ".").replace("%2E", ".");
    match decoded.as_str() {
        "." => Some(1),
        ".." => Some(2),
        _ => None,
    }
}

/// RFC 3986 section 5.2.4, for absolute paths.
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let mut trailing_slash = false;
    for (i, seg) in segments.iter().enumerate() {
        match dots(seg) {
            Some(1) => trailing_slash = i == last,
            Some(_) => {
                out.pop();
                trailing_slash = i == last;
            }
            None => {
                out.push(seg);
                trailing_slash = false;
            }
        }
    }
    let mut result = format!("/{}", out.join("/"));
    if trailing_slash && !result.ends_with('/') {
        result.push('/');
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_mode_normalizes_what_it_says() {
        use PathNormalization::*;
        for (path, mode, expected) in [
            ("/admin/../public", Base, "/public"),
            ("/%61dmin", Base, "/admin"),
            ("/./admin", Base, "/admin"),
            ("/api/%2e%2e/admin", Base, "/admin"),
            ("/a%20b/%7Euser", Base, "/a%20b/~user"),
            ("//admin", Base, "//admin"),
            ("//admin", MergeSlashes, "/admin"),
            ("/a//b///c", MergeSlashes, "/a/b/c"),
            ("/public%2F..%2Fadmin", MergeSlashes, "/public%2F..%2Fadmin"),
            ("/public%2F..%2Fadmin", DecodeAndMergeSlashes, "/admin"),
            ("/public%5c..%5cadmin", DecodeAndMergeSlashes, "/admin"),
            ("/a\\b", DecodeAndMergeSlashes, "/a/b"),
            ("/public\\..\\admin", Base, "/admin"),
            ("/a\\\\b", MergeSlashes, "/a/b"),
            ("/%61dmin/../x", None, "/%61dmin/../x"),
            ("/plain/path", Base, "/plain/path"),
            ("/caf\u{e9}/%", Base, "/caf\u{e9}/%"),
            // Decoding once never leaves an escape to decode again.
            ("/%6%31dmin", Base, "/%6%31dmin"),
            ("/%4%42%7ee%2d", Base, "/%4%42~e-"),
            ("/%%36%31dmin", Base, "/%%361dmin"),
            ("/%%361dmin", Base, "/%%361dmin"),
        ] {
            assert_eq!(normalized(path, mode), expected, "{path} under {mode:?}");
        }
        // The query stays.
        let mut parts = http::Request::get("http://h/a/../b?x=%2e%2e")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        normalize(&mut parts, Base);
        assert_eq!(parts.uri.path_and_query().unwrap().as_str(), "/b?x=%2e%2e");
    }

    #[test]
    fn dot_segments_are_removed() {
        assert_eq!(remove_dot_segments("/web/../api/x"), "/api/x");
        assert_eq!(remove_dot_segments("/a/./b/../../c"), "/c");
        assert_eq!(remove_dot_segments("/../../x"), "/x");
        assert_eq!(remove_dot_segments("/a/b/.."), "/a/");
        assert_eq!(remove_dot_segments("/a/b/."), "/a/b/");
        assert_eq!(remove_dot_segments("/public/%2e%2e/admin"), "/admin");
        assert_eq!(remove_dot_segments("/public/%2E%2e/admin"), "/admin");
        assert_eq!(remove_dot_segments("/a/.%2e/b/%2E/c"), "/b/c");
        assert_eq!(remove_dot_segments("/a/%2e%2ex"), "/a/%2e%2ex");
    }
}
