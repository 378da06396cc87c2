//! Where `meshwork up` finds the mesh config: `--mesh DIR/mesh.yaml`, a mesh file kept
//! inside the config directory, is read as the mesh config (here: a JSON access log), not
//! rejected as a resource; without `--mesh`, the `istio` ConfigMap in istio-system.

mod support;

use std::time::Duration;

use support::*;

/// Serves a direct response for shop.example.test with `extra` in the config directory
/// and `up_args`, and checks that the mesh config in force writes a JSON access log.
fn serves_with_a_json_access_log(label: &str, extra: (&str, &str), up_args: &[&str]) {
    let mut mesh = Mesh::new(label);
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
    mesh.config(extra.0, extra.1);
    let config = mesh.dir.path().join("config");
    let args: Vec<String> = up_args
        .iter()
        .map(|a| a.replace("{config}", config.to_str().unwrap()))
        .collect();
    mesh.up(&args.iter().map(String::as_str).collect::<Vec<_>>());
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
fn a_mesh_file_inside_the_config_directory_is_the_mesh_config() {
    serves_with_a_json_access_log(
        "mesh-inside",
        (
            "mesh.yaml",
            "accessLogFile: /dev/stdout\naccessLogEncoding: JSON\n",
        ),
        &["--mesh", "{config}/mesh.yaml"],
    );
}

#[test]
fn without_a_mesh_file_the_istio_config_map_is_the_mesh_config() {
    serves_with_a_json_access_log(
        "mesh-config-map",
        (
            "istio.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\ndata:\n  mesh: |-\n    accessLogFile: /dev/stdout\n    accessLogEncoding: JSON\n",
        ),
        &[],
    );
}
