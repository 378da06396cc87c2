//! MUTUAL TLS whose client CA comes from the separate `<credentialName>-cacert` Secret, as
//! Istio reads it, rather than from `ca.crt` in the certificate's own Secret.

mod support;

use support::*;

#[test]
fn mutual_tls_trusts_the_ca_of_a_separate_cacert_secret() {
    let mut mesh = Mesh::new("cacert");
    let https = free_port();
    mesh.config(
        "gateway.yaml",
        &format!(
            r#"apiVersion: v1
kind: Service
metadata: {{name: istio-ingressgateway, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  ports: [{{name: https, port: 443, targetPort: {https}}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 443, name: https, protocol: HTTPS}}
    hosts: [api.internal]
    tls: {{mode: MUTUAL, credentialName: internal-tls}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: api, namespace: istio-system}}
spec:
  hosts: [api.internal]
  gateways: [gw]
  http:
  - directResponse: {{status: 200, body: {{string: "trusted client"}}}}
"#
        ),
    );
    let server_ca = TestCa::new("server root");
    let client_ca = TestCa::new("client root");
    let rogue_ca = TestCa::new("rogue root");
    let (cert, key) = server_ca.leaf(&["api.internal"], "api.internal");
    // The certificate's Secret has no ca.crt: the client CA is only in internal-tls-cacert.
    mesh.config(
        "secret.yaml",
        &tls_secret("istio-system", "internal-tls", &cert, &key, None),
    );
    mesh.config(
        "cacert.yaml",
        &opaque_secret(
            "istio-system",
            "internal-tls-cacert",
            &[("ca.crt", &client_ca.cert_pem)],
        ),
    );
    let dir = mesh.dir.path().to_path_buf();
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let ca = write("server-ca.pem", &server_ca.cert_pem);
    let (good_cert, good_key) = client_ca.leaf(&["client.internal"], "client");
    let (bad_cert, bad_key) = rogue_ca.leaf(&["client.internal"], "rogue");
    let (gc, gk) = (write("good.pem", &good_cert), write("good.key", &good_key));
    let (bc, bk) = (write("bad.pem", &bad_cert), write("bad.key", &bad_key));
    mesh.up(&[]);

    let resolve = format!("api.internal:{https}:127.0.0.1");
    let url = format!("https://api.internal:{https}/");
    let with = |extra: &[&str]| {
        let mut args = vec!["--resolve", resolve.as_str(), "--cacert", ca.as_str()];
        args.extend_from_slice(extra);
        args.push(&url);
        String::from_utf8_lossy(&curl(&args).stdout).into_owned()
    };
    assert_eq!(
        with(&["--cert", &gc, "--key", &gk]),
        "trusted client",
        "{}",
        mesh.log()
    );
    assert_eq!(with(&[]), "", "no client certificate is refused");
    assert_eq!(
        with(&["--cert", &bc, "--key", &bk]),
        "",
        "a certificate from another CA is refused"
    );
}
