//! Where `meshwork up` finds the mesh config: `--mesh DIR/mesh.yaml`, a mesh file kept
//! inside the config directory, is read as the mesh config (here: a JSON access log), not
//! rejected as a resource; without `--mesh`, the `istio` ConfigMap in istio-system.

mod support;

use std::time::Duration;

use support::*;

#[test]
fn a_mesh_file_inside_the_config_directory_is_the_mesh_config() {
    let mut mesh = Mesh::new("mesh-inside");
    let http = free_port();
    mesh.config("gateway.yaml", &http_gateway(http, "[shop.example.test]"));
    mesh.config(
        "routes.yaml",
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop, namespace: shop}
spec:
  hosts: [shop.example.test]
  gateways: [istio-system/gw]
  http:
  - directResponse: {status: 200, body: {string: "served"}}
"#,
    );
    mesh.config(
        "mesh.yaml",
        "accessLogFile: /dev/stdout\naccessLogEncoding: JSON\n",
    );
    let mesh_file = mesh.dir.path().join("config/mesh.yaml");
    mesh.up(&["--mesh", mesh_file.to_str().unwrap()]);
    let out = curl(&[
        "-H",
        "Host: shop.example.test",
        &format!("http://127.0.0.1:{http}/x"),
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "served");
    let up = mesh.up.as_ref().unwrap();
    eventually(Duration::from_secs(5), "a JSON access log line", || {
        up.stdout().contains("\"authority\":\"shop.example.test\"")
    });
    assert!(
        !mesh.log().contains("missing required field"),
        "{}",
        mesh.log()
    );
}

#[test]
fn without_a_mesh_file_the_istio_config_map_is_the_mesh_config() {
    let mut mesh = Mesh::new("mesh-config-map");
    let http = free_port();
    mesh.config("gateway.yaml", &http_gateway(http, "[shop.example.test]"));
    mesh.config(
        "routes.yaml",
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop, namespace: shop}
spec:
  hosts: [shop.example.test]
  gateways: [istio-system/gw]
  http:
  - directResponse: {status: 200, body: {string: "served"}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |-
    accessLogFile: /dev/stdout
    accessLogEncoding: JSON
"#,
    );
    mesh.up(&[]);
    let out = curl(&[
        "-H",
        "Host: shop.example.test",
        &format!("http://127.0.0.1:{http}/x"),
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "served");
    let up = mesh.up.as_ref().unwrap();
    eventually(Duration::from_secs(5), "a JSON access log line", || {
        up.stdout().contains("\"authority\":\"shop.example.test\"")
    });
}
