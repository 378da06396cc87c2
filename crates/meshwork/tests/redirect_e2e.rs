//! VirtualService redirects end to end: each of `uri`, `authority`, `scheme`, `port`,
//! `redirectCode` and `derivePort: FROM_PROTOCOL_DEFAULT` changes the Location that curl
//! sees. (`FROM_REQUEST_PORT` is not honoured yet: docs/traffic.md says so.)

mod support;

use support::*;

#[test]
fn every_redirect_field_shapes_the_location() {
    let mut mesh = Mesh::new("redirects");
    let http = free_port();
    mesh.config("gateway.yaml", &http_gateway(http, "[shop.example.test]"));
    mesh.config(
        "routes.yaml",
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: redirects, namespace: shop}
spec:
  hosts: [shop.example.test]
  gateways: [istio-system/gw]
  http:
  - match: [{uri: {prefix: /authority}}]
    redirect: {authority: new.example.test}
  - match: [{uri: {prefix: /scheme}}]
    redirect: {scheme: https}
  - match: [{uri: {prefix: /port}}]
    redirect: {port: 8443}
  - match: [{uri: {prefix: /code}}]
    redirect: {uri: /moved, redirectCode: 308}
  - match: [{uri: {prefix: /all}}]
    redirect: {uri: /everything, authority: new.example.test, scheme: https, port: 9443, redirectCode: 302}
  - match: [{uri: {prefix: /protocol-default}}]
    redirect: {scheme: https, derivePort: FROM_PROTOCOL_DEFAULT}
"#,
    );
    mesh.up(&[]);
    let location = |path: &str, host: &str| {
        let out = curl(&[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{redirect_url}",
            "-H",
            &format!("Host: {host}"),
            &format!("http://127.0.0.1:{http}{path}"),
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let host = "shop.example.test";
    assert_eq!(
        location("/authority/x?q=1", host),
        "301 http://new.example.test/authority/x?q=1",
        "the path and query are kept"
    );
    assert_eq!(
        location("/scheme/x", host),
        "301 https://shop.example.test/scheme/x"
    );
    assert_eq!(
        location("/port/x", host),
        "301 http://shop.example.test:8443/port/x"
    );
    assert_eq!(
        location("/code?a=b", host),
        "308 http://shop.example.test/moved?a=b"
    );
    assert_eq!(
        location("/all", host),
        "302 https://new.example.test:9443/everything"
    );
    assert_eq!(
        location("/protocol-default/x", "shop.example.test:8080"),
        "301 https://shop.example.test/protocol-default/x",
        "the default port of the new scheme, so none is written"
    );
}
