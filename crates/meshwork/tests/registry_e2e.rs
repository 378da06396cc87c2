//! Service registry end to end: Services backed by Pods (numeric and named targetPorts),
//! by hand-written Endpoints and by EndpointSlices (ready endpoints only), each reached
//! through the gateway and answered by real `meshwork echo` backends.

mod support;

use std::collections::BTreeMap;

use support::*;

#[test]
fn services_backed_by_pods_endpoints_and_endpoint_slices_answer() {
    let mut mesh = Mesh::new("registry");
    let http = free_port();
    let (pod_a, pod_b, pod_c) = (mesh.echo("pod-a"), mesh.echo("pod-b"), mesh.echo("pod-c"));
    let (legacy, sliced, not_ready) = (
        mesh.echo("legacy"),
        mesh.echo("sliced"),
        mesh.echo("not-ready"),
    );
    mesh.config(
        "gateway.yaml",
        &http_gateway(http, "[registry.example.test]"),
    );
    mesh.config(
        "services.yaml",
        &format!(
            r#"apiVersion: v1
kind: Service
metadata: {{name: named, namespace: apps}}
spec:
  selector: {{app: named}}
  ports: [{{name: http, port: 80, targetPort: http-port}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: named-a, namespace: apps, labels: {{app: named}}}}
spec:
  containers: [{{name: app, image: echo, ports: [{{name: http-port, containerPort: {pod_a}}}]}}]
status: {{podIP: 127.0.0.1}}
---
apiVersion: v1
kind: Pod
metadata: {{name: named-b, namespace: apps, labels: {{app: named}}}}
spec:
  containers: [{{name: app, image: echo, ports: [{{name: http-port, containerPort: {pod_b}}}]}}]
status: {{podIP: 127.0.0.1}}
---
apiVersion: v1
kind: Pod
metadata: {{name: unscheduled, namespace: apps, labels: {{app: named}}}}
spec:
  containers: [{{name: app, image: echo, ports: [{{name: http-port, containerPort: {not_ready}}}]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: numbered, namespace: apps}}
spec:
  selector: {{app: numbered}}
  ports: [{{name: http, port: 80, targetPort: {pod_c}}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: numbered-c, namespace: apps, labels: {{app: numbered}}}}
spec:
  containers: [{{name: app, image: echo}}]
status: {{podIP: 127.0.0.1}}
---
apiVersion: v1
kind: Service
metadata: {{name: legacy, namespace: apps}}
spec:
  ports: [{{name: http, port: 80}}]
---
apiVersion: v1
kind: Endpoints
metadata: {{name: legacy, namespace: apps}}
subsets:
- addresses: [{{ip: 127.0.0.1}}]
  ports: [{{name: http, port: {legacy}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: sliced, namespace: apps}}
spec:
  ports: [{{name: http, port: 80}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: sliced-ready, namespace: apps, labels: {{kubernetes.io/service-name: sliced}}}}
addressType: IPv4
ports: [{{name: http, port: {sliced}}}]
endpoints: [{{addresses: [127.0.0.1], conditions: {{ready: true}}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: sliced-not-ready, namespace: apps, labels: {{kubernetes.io/service-name: sliced}}}}
addressType: IPv4
ports: [{{name: http, port: {not_ready}}}]
endpoints: [{{addresses: [127.0.0.1], conditions: {{ready: false}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: registry, namespace: apps}}
spec:
  hosts: [registry.example.test]
  gateways: [istio-system/gw]
  http:
  - match: [{{uri: {{prefix: /named}}}}]
    route: [{{destination: {{host: named}}}}]
  - match: [{{uri: {{prefix: /numbered}}}}]
    route: [{{destination: {{host: numbered}}}}]
  - match: [{{uri: {{prefix: /legacy}}}}]
    route: [{{destination: {{host: legacy}}}}]
  - match: [{{uri: {{prefix: /sliced}}}}]
    route: [{{destination: {{host: sliced}}}}]
"#
        ),
    );
    mesh.up(&[]);
    let get = |path: &str| {
        answers(&[
            "-H",
            "Host: registry.example.test",
            &format!("http://127.0.0.1:{http}{path}?n=[1-40]"),
        ])
    };
    let counts = |pairs: &[(&str, usize)]| -> BTreeMap<String, usize> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    };
    // Round robin over the two Pods whose named container port the targetPort names; the
    // Pod without an IP is no endpoint.
    assert_eq!(
        get("/named"),
        counts(&[("200 pod-a", 20), ("200 pod-b", 20)])
    );
    assert_eq!(get("/numbered"), counts(&[("200 pod-c", 40)]));
    assert_eq!(get("/legacy"), counts(&[("200 legacy", 40)]));
    assert_eq!(
        get("/sliced"),
        counts(&[("200 sliced", 40)]),
        "only the ready EndpointSlice endpoint"
    );
}
