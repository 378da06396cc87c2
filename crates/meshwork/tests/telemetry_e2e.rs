//! Istio's standard metrics at the gateway, scraped by a real Prometheus server (Debian's
//! `prometheus`, started here on a free port) and queried with PromQL through its HTTP
//! API, as an Istio user's dashboards query them.

mod support;

use std::time::Duration;

use support::prometheus::{Prometheus, prometheus_of};
use support::*;

const HOST: &str = "Host: app.example.test";

/// Prometheus scraping `target` every second.
fn prometheus(dir: &std::path::Path, target: u16) -> Prometheus {
    prometheus_of(dir, &[target])
}

/// The value of a PromQL query that returns one sample, if it does.
fn query(prom: &Prometheus, promql: &str) -> Option<f64> {
    let v = prom.api_query(promql).ok()?;
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

/// A gateway (port 80 bound on the port returned) serving `app.example.test` from the
/// echo server `app`, in a mesh of its own.
fn app_gateway(label: &str) -> (Mesh, u16) {
    app_gateway_with(label, "  - route: [{destination: {host: app}}]\n")
}

/// The same with these `http:` routes (YAML items).
fn app_gateway_with(label: &str, routes: &str) -> (Mesh, u16) {
    let mut mesh = Mesh::new(label);
    let http = free_port();
    let app = mesh.echo("app");
    app_on_port_80(&mesh, http, &[app], "[app.example.test]", routes);
    (mesh, http)
}

#[test]
fn prometheus_scrapes_istio_request_metrics_from_the_gateway() {
    let mut mesh = Mesh::new("metrics");
    // Two metrics ports, as Istio's 15020 and 15090.
    let (http, metrics, envoy_metrics) = (free_port(), free_port(), free_port());
    let app = mesh.echo("app");
    app_on_port_80(
        &mesh,
        http,
        &[app],
        "[app.example.test]",
        "  - retries: {attempts: 0}\n    route: [{destination: {host: app}}]\n",
    );
    mesh.up(&[
        "--metrics",
        &format!("127.0.0.1:{metrics}"),
        "--metrics",
        &format!("127.0.0.1:{envoy_metrics}"),
    ]);
    let url = format!("http://127.0.0.1:{http}/");
    for _ in 0..7 {
        assert_eq!(status(&["-H", HOST, &url]), 200);
    }
    for _ in 0..3 {
        assert_eq!(status(&["-H", HOST, &format!("{url}?status=503")]), 503);
    }
    assert_eq!(status(&["-H", "Host: nobody.test", &url]), 404);

    // The exposition itself: names, Istio's labels and buckets.
    let text = String::from_utf8_lossy(
        &curl(&[&format!("http://127.0.0.1:{metrics}/stats/prometheus")]).stdout,
    )
    .into_owned();
    // Istio's buckets, as its proxies serve them.
    let buckets = |metric: &str| -> Vec<String> {
        let mut les: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with(&format!("{metric}_bucket{{")))
            .filter_map(|l| Some(l.split("le=\"").nth(1)?.split('"').next()?.to_string()))
            .collect();
        // The buckets of the first series.
        let end = les.iter().position(|le| le == "+Inf").map_or(0, |i| i + 1);
        les.truncate(end);
        les
    };
    assert_eq!(
        buckets("istio_request_duration_milliseconds"),
        [
            "0.5",
            "1.0",
            "5.0",
            "10.0",
            "25.0",
            "50.0",
            "100.0",
            "250.0",
            "500.0",
            "1000.0",
            "2500.0",
            "5000.0",
            "10000.0",
            "30000.0",
            "60000.0",
            "300000.0",
            "600000.0",
            "1800000.0",
            "3600000.0",
            "+Inf"
        ]
    );
    assert_eq!(
        buckets("istio_request_bytes"),
        [
            "1.0",
            "10.0",
            "100.0",
            "1000.0",
            "10000.0",
            "100000.0",
            "1000000.0",
            "10000000.0",
            "100000000.0",
            "1000000000.0",
            "+Inf"
        ]
    );
    for needle in [
        "istio_requests_total{",
        "reporter=\"source\"",
        "source_workload=\"istio-ingressgateway\"",
        "source_workload_namespace=\"istio-system\"",
        "destination_service=\"app.shop.svc.cluster.local\"",
        "destination_service_name=\"app\"",
        "destination_service_namespace=\"shop\"",
        "request_protocol=\"http\"",
        "response_flags=\"-\"",
        "connection_security_policy=\"unknown\"",
        "istio_request_duration_milliseconds_bucket{",
        "le=\"0.5\"",
        "le=\"3600000.0\"",
        "istio_request_bytes_bucket{",
        "istio_response_bytes_bucket{",
        "le=\"1000000000.0\"",
    ] {
        assert!(text.contains(needle), "{needle} in:\n{text}");
    }
    let second = String::from_utf8_lossy(
        &curl(&[&format!(
            "http://127.0.0.1:{envoy_metrics}/stats/prometheus"
        )])
        .stdout,
    )
    .into_owned();
    assert!(
        second.contains("destination_service=\"app.shop.svc.cluster.local\""),
        "the second metrics port serves the same series:\n{second}"
    );

    // What a dashboard asks, through a real Prometheus.
    let prom = prometheus(mesh.dir.path(), metrics);
    let by = |code: &str| {
        format!(
            "sum(istio_requests_total{{destination_service_name=\"app\",response_code=\"{code}\"}})"
        )
    };
    eventually(Duration::from_secs(20), "7 requests answered 200", || {
        query(&prom, &by("200")) == Some(7.0)
    });
    assert_eq!(query(&prom, &by("503")), Some(3.0));
    assert_eq!(
        query(
            &prom,
            "sum(istio_requests_total{destination_service=\"unknown\",response_code=\"404\",response_flags=\"NR\"})"
        ),
        Some(1.0)
    );
    assert_eq!(
        query(
            &prom,
            "sum(istio_request_duration_milliseconds_count{destination_service_name=\"app\"})"
        ),
        Some(10.0)
    );
    // The process's own metrics come with them.
    assert!(
        query(&prom, "process_resident_memory_bytes").is_some_and(|rss| rss > 1_000_000.0),
        "the gateway's resident memory"
    );
}

#[test]
fn a_telemetry_resource_turns_the_access_log_on() {
    let (mut mesh, http) = app_gateway("telemetry-log");
    // As the user's write-up enables it: no mesh config at all.
    mesh.config(
        "telemetry.yaml",
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata:\n  name: access-logs\n  namespace: istio-system\nspec:\n  accessLogging:\n    - providers:\n        - name: envoy\n",
    );
    mesh.up(&[]);
    assert_eq!(
        status(&["-H", HOST, &format!("http://127.0.0.1:{http}/logged")]),
        200
    );
    let up = mesh.up.as_ref().unwrap();
    eventually(Duration::from_secs(5), "a text access log line", || {
        up.stdout().contains("\"GET /logged HTTP/1.1\" 200")
    });
    // Disabled for the gateway: no more lines.
    mesh.config(
        "telemetry-off.yaml",
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: quiet, namespace: istio-system}\nspec:\n  selector: {matchLabels: {istio: ingressgateway}}\n  accessLogging:\n  - disabled: true\n",
    );
    let admin = format!("http://127.0.0.1:{}/config_dump", mesh.admin);
    eventually(Duration::from_secs(10), "the log turned off", || {
        !String::from_utf8_lossy(&curl(&[&admin]).stdout).contains("\"access_logs\"")
    });
    assert_eq!(
        status(&["-H", HOST, &format!("http://127.0.0.1:{http}/unlogged")]),
        200
    );
    // On again: the next request is logged, and the one made while off never was (one
    // writer, in order).
    std::fs::remove_file(mesh.dir.path().join("config/telemetry-off.yaml")).unwrap();
    eventually(Duration::from_secs(10), "the log on again", || {
        assert_eq!(
            status(&["-H", HOST, &format!("http://127.0.0.1:{http}/logged-again")]),
            200
        );
        up.stdout().contains("/logged-again")
    });
    assert!(!up.stdout().contains("/unlogged"), "{}", up.stdout());
}

#[test]
fn file_access_log_providers_write_their_own_text_and_json_formats() {
    let (mut mesh, http) = app_gateway("log-formats");
    let (json_file, text_file) = (
        mesh.dir.path().join("json.log"),
        mesh.dir.path().join("text.log"),
    );
    let mesh_config = mesh.dir.path().join("mesh-logs.yaml");
    std::fs::write(
        &mesh_config,
        format!(
            "extensionProviders:\n- name: json-file\n  envoyFileAccessLog:\n    path: {}\n    logFormat:\n      labels:\n        code: \"%RESPONSE_CODE%\"\n        user: \"%REQ(X-USER)%\"\n        route: \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%\"\n        sni: \"%REQUESTED_SERVER_NAME%\"\n- name: text-file\n  envoyFileAccessLog:\n    path: {}\n    logFormat:\n      text: \"%RESPONSE_CODE% user=%REQ(X-USER):3% %UPSTREAM_CLUSTER%\\n\"\n",
            json_file.display(),
            text_file.display()
        ),
    )
    .unwrap();
    let telemetry = |provider: &str| {
        format!(
            "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{name: mesh-default, namespace: istio-system}}\nspec:\n  accessLogging:\n  - providers: [{{name: {provider}}}]\n"
        )
    };
    mesh.config("telemetry.yaml", &telemetry("json-file"));
    mesh.up(&["--mesh", mesh_config.to_str().unwrap()]);
    let url = format!("http://127.0.0.1:{http}/shop?x=1");
    assert_eq!(status(&["-H", HOST, "-H", "x-user: ana", &url]), 200);
    let read = |f: &std::path::Path| std::fs::read_to_string(f).unwrap_or_default();
    eventually(Duration::from_secs(5), "the JSON line", || {
        !read(&json_file).is_empty()
    });
    let line: serde_json::Value = serde_json::from_str(read(&json_file).trim()).unwrap();
    assert_eq!(
        line,
        serde_json::json!({"code": 200, "user": "ana", "route": "GET /shop?x=1", "sni": null})
    );
    // The other provider, as a Telemetry change picks it.
    mesh.config("telemetry.yaml", &telemetry("text-file"));
    eventually(Duration::from_secs(10), "the text line", || {
        assert_eq!(
            status(&["-H", HOST, "-H", "x-user: bartholomew", &url]),
            200
        );
        !read(&text_file).is_empty()
    });
    let first = read(&text_file)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(
        first.starts_with("200 user=bar outbound|80||app."),
        "{first}"
    );
}

/// What an OpenTelemetry collector's log service received: each record's body and
/// attributes, with its resource's `log_name`.
type LogRecords = std::sync::Arc<
    std::sync::Mutex<Vec<(String, String, std::collections::BTreeMap<String, String>)>>,
>;

struct LogCollector(LogRecords);

#[tonic::async_trait]
impl opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::LogsService
    for LogCollector
{
    async fn export(
        &self,
        request: tonic::Request<
            opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest,
        >,
    ) -> Result<
        tonic::Response<opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse>,
        tonic::Status,
    > {
        use opentelemetry_proto::tonic::common::v1::any_value::Value;
        let text = |v: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>| match v
            .and_then(|v| v.value.as_ref())
        {
            Some(Value::StringValue(s)) => s.clone(),
            other => format!("{other:?}"),
        };
        let mut kept = self.0.lock().unwrap();
        for resource in request.into_inner().resource_logs {
            let log_name = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "log_name")
                .map(|a| text(a.value.as_ref()))
                .unwrap_or_default();
            for scope in resource.scope_logs {
                for record in scope.log_records {
                    let attributes = record
                        .attributes
                        .iter()
                        .map(|a| (a.key.clone(), text(a.value.as_ref())))
                        .collect();
                    kept.push((log_name.clone(), text(record.body.as_ref()), attributes));
                }
            }
        }
        Ok(tonic::Response::new(Default::default()))
    }
}

#[test]
fn an_envoy_otel_als_provider_sends_the_access_log_to_a_collector() {
    use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::LogsServiceServer;
    let records: LogRecords = Default::default();
    let port = serve_grpc(LogsServiceServer::new(LogCollector(records.clone())));
    let (mut mesh, http) = app_gateway("otel-als");
    let mesh_config = mesh.dir.path().join("mesh-otel.yaml");
    std::fs::write(
        &mesh_config,
        format!(
            "extensionProviders:\n- name: otel-logs\n  envoyOtelAls:\n    service: 127.0.0.1\n    port: {port}\n    logName: mesh-access\n    logFormat:\n      text: \"%REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE%\"\n      labels:\n        user: \"%REQ(X-USER)%\"\n        flags: \"%RESPONSE_FLAGS%\"\n"
        ),
    )
    .unwrap();
    mesh.config(
        "telemetry.yaml",
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: mesh-default, namespace: istio-system}\nspec:\n  accessLogging:\n  - providers: [{name: otel-logs}]\n",
    );
    mesh.up(&["--mesh", mesh_config.to_str().unwrap()]);
    let url = format!("http://127.0.0.1:{http}/shipped?n=1");
    assert_eq!(status(&["-H", HOST, "-H", "x-user: ana", &url]), 200);
    eventually(Duration::from_secs(10), "the record", || {
        !records.lock().unwrap().is_empty()
    });
    let (log_name, body, attributes) = records.lock().unwrap()[0].clone();
    assert_eq!(log_name, "mesh-access");
    assert_eq!(body, "GET /shipped?n=1 200");
    assert_eq!(attributes["user"], "ana");
    assert_eq!(attributes["flags"], "-");
    let stats = format!("http://127.0.0.1:{}/stats", mesh.admin);
    eventually(Duration::from_secs(5), "the record counted", || {
        String::from_utf8_lossy(&curl(&[&stats]).stdout)
            .contains("access_logs.open_telemetry_access_log.logs_written: 1")
    });
    // Nothing goes to a file or to standard output.
    assert!(!mesh.up.as_ref().unwrap().stdout().contains("/shipped"));
}

#[test]
fn a_filter_meshwork_cannot_run_is_reported_and_the_log_stays_on() {
    let (mut mesh, http) = app_gateway("telemetry-filter-unknown");
    mesh.config(
        "telemetry.yaml",
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: odd, namespace: istio-system}\nspec:\n  accessLogging:\n  - providers: [{name: envoy}]\n    filter: {expression: \"request.path.matches('^/x')\"}\n",
    );
    mesh.up(&[]);
    assert_eq!(
        status(&["-H", HOST, &format!("http://127.0.0.1:{http}/anything")]),
        200
    );
    let up = mesh.up.as_ref().unwrap();
    eventually(Duration::from_secs(5), "the request logged", || {
        up.stdout().contains("/anything")
    });
    let log = mesh.log();
    assert!(
        log.contains("Telemetry istio-system/odd") && log.contains("matches() is not supported"),
        "{log}"
    );
}

#[test]
fn a_telemetry_filter_logs_only_the_failures() {
    let (mut mesh, http) = app_gateway_with(
        "telemetry-filter",
        "  - retries: {attempts: 0}\n    route: [{destination: {host: app}}]\n",
    );
    mesh.config(
        "telemetry.yaml",
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: failures, namespace: istio-system}\nspec:\n  accessLogging:\n  - providers: [{name: envoy}]\n    filter: {expression: \"response.code >= 400 || request.headers['x-debug'] == 'on'\"}\n",
    );
    mesh.up(&[]);
    let url = |path: &str| format!("http://127.0.0.1:{http}{path}");
    assert_eq!(status(&["-H", HOST, &url("/good")]), 200);
    assert_eq!(
        status(&["-H", HOST, "-H", "x-debug: off", &url("/quiet")]),
        200
    );
    assert_eq!(
        status(&["-H", HOST, "-H", "X-Debug: on", &url("/debugged")]),
        200
    );
    assert_eq!(status(&["-H", HOST, &url("/bad?status=503")]), 503);
    let up = mesh.up.as_ref().unwrap();
    // One writer, in order: once the failure is written, the others would have been too.
    eventually(Duration::from_secs(5), "the failure logged", || {
        up.stdout().contains("/bad?status=503")
    });
    assert!(up.stdout().contains("/debugged"), "{}", up.stdout());
    assert!(!up.stdout().contains("/good"), "{}", up.stdout());
    assert!(!up.stdout().contains("/quiet"), "{}", up.stdout());
    assert!(!mesh.log().contains("not supported yet"), "{}", mesh.log());
}

/// A Zipkin collector: it takes POSTs of span batches and keeps every span.
struct Zipkin {
    port: u16,
    spans: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
}

impl Zipkin {
    fn start() -> Zipkin {
        use std::io::{BufRead, Read, Write};
        let listener = std::net::TcpListener::bind(("127.0.0.1", free_port())).unwrap();
        let port = listener.local_addr().unwrap().port();
        let spans: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>> = Default::default();
        let kept = spans.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let mut reader = std::io::BufReader::new(stream);
                let mut length = 0usize;
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                    if line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    line.clear();
                }
                let mut body = vec![0u8; length];
                if reader.read_exact(&mut body).is_err() {
                    continue;
                }
                if let Ok(serde_json::Value::Array(batch)) = serde_json::from_slice(&body) {
                    kept.lock().unwrap().extend(batch);
                }
                let _ = reader.get_mut().write_all(
                    b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
            }
        });
        Zipkin { port, spans }
    }

    fn spans(&self) -> Vec<serde_json::Value> {
        self.spans.lock().unwrap().clone()
    }

    /// The spans in the form both collectors share.
    fn seen(&self) -> Vec<SeenSpan> {
        let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
        self.spans()
            .iter()
            .map(|s| SeenSpan {
                service: text(&s["localEndpoint"]["serviceName"]),
                trace_id: text(&s["traceId"]),
                id: text(&s["id"]),
                parent: text(&s["parentId"]),
                kind: match s["kind"].as_str() {
                    Some("SERVER") => SERVER,
                    Some("CLIENT") => CLIENT,
                    _ => 0,
                },
                attributes: s["tags"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), text(v)))
                    .collect(),
                error: false,
            })
            .collect()
    }
}

/// The trace headers the echo backend saw, from its JSON answer.
fn seen_traceparent(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).expect("the echo answers JSON");
    v["headers"]["traceparent"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// A gateway on port 80 (the port returned) in front of the echo server `app`, which a
/// Telemetry traces every request of to the extension provider `tracer` (`provider`,
/// YAML), with the custom tag `team: platform` and `more_tags` (YAML).
fn traced_gateway(label: &str, provider: &str, more_tags: &str) -> (Mesh, u16) {
    let (mut mesh, http) = app_gateway(label);
    let mesh_config = mesh.dir.path().join("mesh-tracing.yaml");
    std::fs::write(&mesh_config, format!("extensionProviders:\n{provider}")).unwrap();
    mesh.config(
        "telemetry.yaml",
        &format!("apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{name: mesh-default, namespace: istio-system}}\nspec:\n  tracing:\n  - providers: [{{name: tracer}}]\n    randomSamplingPercentage: 100\n    customTags:\n      team: {{literal: {{value: platform}}}}\n{more_tags}"),
    );
    mesh.up(&["--mesh", mesh_config.to_str().unwrap()]);
    (mesh, http)
}

#[test]
fn spans_link_to_the_callers_trace_and_reach_a_zipkin_collector() {
    let zipkin = Zipkin::start();
    let provider = format!(
        "- name: tracer\n  zipkin: {{service: 127.0.0.1, port: {}}}\n",
        zipkin.port
    );
    let (mesh, http) = traced_gateway(
        "tracing",
        &provider,
        "      client: {header: {name: x-client, defaultValue: none}}\n      zone: {environment: {name: MESHWORK_TEST_ZONE, defaultValue: unknown}}\n      log: {environment: {name: MESHWORK_LOG}}\n",
    );
    let url = format!("http://127.0.0.1:{http}/traced");
    // W3C from the caller: the backend sees the same trace, with the gateway's span as
    // its parent; the collector gets that span, child of the caller's.
    let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let out = curl(&[
        "-s",
        "-H",
        HOST,
        "-H",
        &format!("traceparent: {caller}"),
        "-H",
        "x-client: web",
        &url,
    ]);
    let seen = seen_traceparent(&out.stdout);
    let parts: Vec<&str> = seen.split('-').collect();
    assert_eq!(parts.len(), 4, "{seen}");
    assert_eq!(
        parts[1], "4bf92f3577b34da6a3ce929d0e0e4736",
        "the same trace"
    );
    assert_ne!(parts[2], "00f067aa0ba902b7", "a span of the gateway's own");
    assert_eq!(parts[3], "01");
    eventually(Duration::from_secs(10), "the gateway's span", || {
        zipkin.spans().iter().any(|s| s["id"] == parts[2])
    });
    let span = zipkin
        .spans()
        .into_iter()
        .find(|s| s["id"] == parts[2])
        .unwrap();
    assert_eq!(span["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(span["parentId"], "00f067aa0ba902b7");
    assert_eq!(span["tags"]["http.status_code"], "200");
    assert_eq!(span["tags"]["http.method"], "GET");
    assert_eq!(span["tags"]["team"], "platform", "a literal custom tag");
    assert_eq!(span["tags"]["client"], "web", "from the request's header");
    assert_eq!(
        span["tags"]["zone"], "unknown",
        "an unset variable's default"
    );
    assert_eq!(span["tags"]["log"], "info", "from the proxy's environment");
    assert!(
        span["tags"]["upstream_cluster"]
            .as_str()
            .is_some_and(|c| c.contains("app.")),
        "{span}"
    );
    // B3 from the caller is joined too.
    let out = curl(&[
        "-s",
        "-H",
        HOST,
        "-H",
        "x-b3-traceid: 0af7651916cd43dd8448eb211c80319c",
        "-H",
        "x-b3-spanid: b7ad6b7169203331",
        "-H",
        "x-b3-sampled: 1",
        &url,
    ]);
    assert!(
        seen_traceparent(&out.stdout).starts_with("00-0af7651916cd43dd8448eb211c80319c-"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Without a context the gateway starts a trace, sampled at 100%.
    let out = curl(&["-s", "-H", HOST, &url]);
    let fresh = seen_traceparent(&out.stdout);
    let trace = fresh.split('-').nth(1).unwrap_or_default().to_string();
    assert_eq!(trace.len(), 32, "{fresh}");
    eventually(Duration::from_secs(10), "the new trace's span", || {
        zipkin
            .spans()
            .iter()
            .any(|s| s["traceId"] == trace.as_str() && s.get("parentId").is_none())
    });
    // What was sent is counted.
    let stats = format!("http://127.0.0.1:{}/stats", mesh.admin);
    eventually(Duration::from_secs(5), "the spans counted as sent", || {
        let text = String::from_utf8_lossy(&curl(&[&stats]).stdout).into_owned();
        text.lines()
            .find_map(|l| l.split_once("tracing.zipkin.spans_sent: "))
            .and_then(|(_, n)| n.trim().parse::<u64>().ok())
            .is_some_and(|n| n >= 3)
    });
    // At 0%, new traces are not sampled: the context still goes on, no span is sent.
    mesh.config(
        "telemetry.yaml",
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: mesh-default, namespace: istio-system}\nspec:\n  tracing:\n  - providers: [{name: tracer}]\n    randomSamplingPercentage: 0\n",
    );
    let admin = format!("http://127.0.0.1:{}/config_dump", mesh.admin);
    eventually(Duration::from_secs(10), "sampling 0 applies", || {
        String::from_utf8_lossy(&curl(&[&admin]).stdout).contains("\"sampling\": 0.0")
    });
    let out = curl(&["-s", "-H", HOST, &url]);
    let unsampled = seen_traceparent(&out.stdout);
    assert!(unsampled.ends_with("-00"), "{unsampled}");
    let trace = unsampled.split('-').nth(1).unwrap_or_default().to_string();
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !zipkin
            .spans()
            .iter()
            .any(|s| s["traceId"] == trace.as_str()),
        "an unsampled trace is not reported"
    );
    // disableSpanReporting: a sampled trace goes on to the backend, and no span is sent.
    mesh.config(
        "telemetry.yaml",
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: mesh-default, namespace: istio-system}\nspec:\n  tracing:\n  - providers: [{name: tracer}]\n    randomSamplingPercentage: 100\n    disableSpanReporting: true\n",
    );
    eventually(Duration::from_secs(10), "span reporting off", || {
        String::from_utf8_lossy(&curl(&[&admin]).stdout)
            .contains("\"disable_span_reporting\": true")
    });
    let out = curl(&["-s", "-H", HOST, &url]);
    let quiet = seen_traceparent(&out.stdout);
    assert!(quiet.ends_with("-01"), "sampled and passed on: {quiet}");
    let quiet_trace = quiet.split('-').nth(1).unwrap_or_default().to_string();
    // Reporting on again: the next trace's span arrives, and the quiet one never did.
    mesh.config(
        "telemetry.yaml",
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: mesh-default, namespace: istio-system}\nspec:\n  tracing:\n  - providers: [{name: tracer}]\n    randomSamplingPercentage: 100\n",
    );
    eventually(Duration::from_secs(10), "a reported span again", || {
        let out = curl(&["-s", "-H", HOST, &url]);
        let trace = seen_traceparent(&out.stdout);
        let id = trace.split('-').nth(1).unwrap_or_default().to_string();
        std::thread::sleep(Duration::from_millis(700));
        zipkin.spans().iter().any(|s| s["traceId"] == id.as_str())
    });
    assert!(
        !zipkin
            .spans()
            .iter()
            .any(|s| s["traceId"] == quiet_trace.as_str()),
        "disableSpanReporting sends nothing"
    );
}

/// A gateway tracing every request to `provider` (YAML of a `tracer` extension
/// provider), where nothing listens: its requests are served and `stat` counts the
/// dropped spans.
fn spans_are_dropped_when_the_collector_is_down(label: &str, provider: &str, stat: &str) {
    let (mut mesh, http) = app_gateway(label);
    let mesh_config = mesh.dir.path().join("mesh-tracing.yaml");
    std::fs::write(
        &mesh_config,
        format!(
            "defaultProviders: {{tracing: [tracer]}}\nextensionProviders:\n{provider}defaultConfig:\n  tracing: {{sampling: 100}}\n"
        ),
    )
    .unwrap();
    mesh.up(&["--mesh", mesh_config.to_str().unwrap()]);
    let url = format!("http://127.0.0.1:{http}/traced");
    for _ in 0..3 {
        assert_eq!(status(&["-H", HOST, &url]), 200);
    }
    let stats = format!("http://127.0.0.1:{}/stats", mesh.admin);
    eventually(
        Duration::from_secs(15),
        "the spans counted as dropped",
        || {
            let text = String::from_utf8_lossy(&curl(&[&stats]).stdout).into_owned();
            text.lines()
                .find_map(|l| l.split_once(&format!("{stat}: ")))
                .and_then(|(_, n)| n.trim().parse::<u64>().ok())
                .is_some_and(|n| n >= 3)
        },
    );
}

#[test]
fn a_collector_that_is_down_costs_only_the_spans_which_are_counted() {
    let dead = free_port();
    spans_are_dropped_when_the_collector_is_down(
        "tracing-down",
        &format!("- name: tracer\n  zipkin: {{service: 127.0.0.1, port: {dead}}}\n"),
        "tracing.zipkin.spans_dropped",
    );
    spans_are_dropped_when_the_collector_is_down(
        "tracing-down-otlp",
        &format!("- name: tracer\n  opentelemetry: {{service: 127.0.0.1, port: {dead}}}\n"),
        "tracing.opentelemetry.spans_dropped",
    );
}

#[test]
fn a_trace_links_the_gateway_and_every_sidecar_hop() {
    let zipkin = Zipkin::start();
    let provider = format!(
        "- name: tracer\n  zipkin: {{service: 127.0.0.1, port: {}}}\n",
        zipkin.port
    );
    let hops = hops_through_bookinfo(&provider, || zipkin.seen());
    assert_eq!(hops[2].service, "productpage.default");
}

/// The spans of one traced request through Bookinfo, whose mesh traces every request to
/// the extension provider `tracer` (`provider`, YAML), each the child of the one before:
/// gateway -> productpage (in) -> productpage (out, to reviews) -> reviews (in), whose
/// services are checked.
fn hops_through_bookinfo(provider: &str, received: impl Fn() -> Vec<SeenSpan>) -> Vec<SeenSpan> {
    let dir = TempDir::new("tracing-mesh");
    let mesh_config = dir.path().join("mesh.yaml");
    std::fs::write(
        &mesh_config,
        format!(
            "defaultProviders: {{tracing: [tracer]}}\nextensionProviders:\n{provider}defaultConfig:\n  tracing: {{sampling: 100}}\n"
        ),
    )
    .unwrap();
    let mesh = support::bookinfo::Bookinfo::start_with(&["--mesh", mesh_config.to_str().unwrap()]);
    let trace = format!("{:032x}", own_trace_id());
    let caller = "c7ad6b7169203331";
    let chains = mesh.chains(1, &[&format!("traceparent: 00-{trace}-{caller}-01")]);
    assert_eq!(chains.len(), 1, "{chains:?}");
    let spans = || -> Vec<SeenSpan> {
        received()
            .into_iter()
            .filter(|s| s.trace_id == trace)
            .collect()
    };
    let child = |spans: &[SeenSpan], parent: &str, kind: i32, cluster: &str| {
        spans
            .iter()
            .find(|s| {
                s.parent == parent
                    && s.kind == kind
                    && s.attributes
                        .get("upstream_cluster")
                        .is_some_and(|c| c.contains(cluster))
            })
            .cloned()
    };
    let linked = |spans: &[SeenSpan]| -> Option<Vec<SeenSpan>> {
        let gateway = child(spans, caller, CLIENT, "productpage")?;
        let productpage_in = child(spans, &gateway.id, SERVER, "inbound|")?;
        let productpage_out = child(spans, &productpage_in.id, CLIENT, "reviews")?;
        let reviews_in = child(spans, &productpage_out.id, SERVER, "inbound|")?;
        Some(vec![gateway, productpage_in, productpage_out, reviews_in])
    };
    eventually(Duration::from_secs(10), "the linked spans", || {
        linked(&spans()).is_some()
    });
    let hops = linked(&spans()).unwrap();
    assert!(
        hops[0].service.starts_with("istio-ingressgateway"),
        "{hops:?}"
    );
    // Spans name the canonical service, as Istio's do.
    assert_eq!(hops[1].service, "productpage.default");
    assert_eq!(hops[1].attributes["istio.canonical_service"], "productpage");
    assert_eq!(hops[3].service, "reviews.default");
    hops
}

#[test]
fn prometheus_scrapes_two_sidecars_which_report_both_ends_of_a_call() {
    let mesh = support::bookinfo::Bookinfo::start();
    let counts = mesh.chains(10, &[]);
    assert_eq!(counts.values().sum::<usize>(), 10, "{counts:?}");
    let status_port = |step: &str| {
        mesh.steps
            .iter()
            .find(|s| s.name == step)
            .and_then(|s| s.status_port)
            .expect("a proxy")
    };
    let prom = prometheus_of(
        mesh.dir.path(),
        &[
            status_port("productpage-v1-sidecar"),
            status_port("details-v1-sidecar"),
        ],
    );
    // productpage called details ten times: its sidecar reports the source end, details'
    // the destination end, each with the other's workload.
    let calls = |reporter: &str| {
        format!(
            "sum(istio_requests_total{{reporter=\"{reporter}\",source_workload=\"productpage-v1\",destination_workload=\"details-v1\",destination_service_name=\"details\",response_code=\"200\"}})"
        )
    };
    eventually(Duration::from_secs(20), "both ends scraped", || {
        query(&prom, &calls("source")) == Some(10.0)
            && query(&prom, &calls("destination")) == Some(10.0)
    });
    assert_eq!(
        query(
            &prom,
            "sum(istio_requests_total{reporter=\"destination\",destination_workload=\"details-v1\",connection_security_policy=\"mutual_tls\"})"
        ),
        Some(10.0),
        "over mTLS"
    );
}

/// A span as a collector received it, flattened for the assertions (a Zipkin span's
/// tags are its attributes).
#[derive(Debug, Clone)]
struct SeenSpan {
    service: String,
    trace_id: String,
    id: String,
    parent: String,
    kind: i32,
    attributes: std::collections::BTreeMap<String, String>,
    /// OTLP's status is `ERROR` (Zipkin has none).
    error: bool,
}

type Received = std::sync::Arc<std::sync::Mutex<Vec<SeenSpan>>>;

fn keep(
    spans: &Received,
    request: opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
) {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let text = |kv: &opentelemetry_proto::tonic::common::v1::KeyValue| {
        let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
            Some(Value::StringValue(s)) => s.clone(),
            other => format!("{other:?}"),
        };
        (kv.key.clone(), value)
    };
    let mut kept = spans.lock().unwrap();
    for resource in request.resource_spans {
        let service = resource
            .resource
            .iter()
            .flat_map(|r| r.attributes.iter().map(text))
            .find(|(k, _)| k == "service.name")
            .map(|(_, v)| v)
            .unwrap_or_default();
        for scope in resource.scope_spans {
            for s in scope.spans {
                kept.push(SeenSpan {
                    service: service.clone(),
                    trace_id: hex(&s.trace_id),
                    id: hex(&s.span_id),
                    parent: hex(&s.parent_span_id),
                    kind: s.kind,
                    attributes: s.attributes.iter().map(text).collect(),
                    error: s.status.as_ref().is_some_and(|st| st.code == 2),
                });
            }
        }
    }
}

/// An OpenTelemetry collector: OTLP over gRPC (the `TraceService` of the official
/// definitions, served by tonic) or over HTTP (protobuf POSTs to `/v1/traces`).
struct Otlp {
    port: u16,
    spans: Received,
    /// The paths HTTP batches were POSTed to.
    paths: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

struct Collector(Received);

#[tonic::async_trait]
impl opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService
    for Collector
{
    async fn export(
        &self,
        request: tonic::Request<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
        >,
    ) -> Result<
        tonic::Response<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse,
        >,
        tonic::Status,
    > {
        keep(&self.0, request.into_inner());
        Ok(tonic::Response::new(Default::default()))
    }
}

impl Otlp {
    fn grpc() -> Otlp {
        use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer;
        let spans: Received = Default::default();
        let port = serve_grpc(TraceServiceServer::new(Collector(spans.clone())));
        Otlp {
            port,
            spans,
            paths: Default::default(),
        }
    }

    fn http() -> Otlp {
        use prost::Message;
        use std::io::{BufRead, Read, Write};
        let listener = std::net::TcpListener::bind(("127.0.0.1", free_port())).unwrap();
        let port = listener.local_addr().unwrap().port();
        let spans: Received = Default::default();
        let paths: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
        let (kept, seen) = (spans.clone(), paths.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let mut reader = std::io::BufReader::new(stream);
                let (mut length, mut line, mut first) = (0usize, String::new(), true);
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                    if line == "\r\n" {
                        break;
                    }
                    if first {
                        let head = line
                            .split_whitespace()
                            .take(2)
                            .collect::<Vec<_>>()
                            .join(" ");
                        seen.lock().unwrap().push(head);
                        first = false;
                    }
                    let lower = line.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    if let Some(v) = lower.strip_prefix("content-type:") {
                        seen.lock().unwrap().push(v.trim().to_string());
                    }
                    line.clear();
                }
                let mut body = vec![0u8; length];
                if reader.read_exact(&mut body).is_err() {
                    continue;
                }
                if let Ok(request) = opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::decode(body.as_slice()) {
                    keep(&kept, request);
                }
                let _ = reader.get_mut().write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
            }
        });
        Otlp { port, spans, paths }
    }

    fn spans(&self) -> Vec<SeenSpan> {
        self.spans.lock().unwrap().clone()
    }
}

#[test]
fn a_tracing_match_mode_reports_only_that_sides_spans() {
    let zipkin = Zipkin::start();
    let dir = TempDir::new("tracing-mode");
    let mesh_config = dir.path().join("mesh.yaml");
    std::fs::write(
        &mesh_config,
        format!(
            "extensionProviders:\n- name: tracer\n  zipkin: {{service: 127.0.0.1, port: {}}}\n",
            zipkin.port
        ),
    )
    .unwrap();
    let mesh = support::bookinfo::Bookinfo::start_with(&["--mesh", mesh_config.to_str().unwrap()]);
    mesh.edit(|config| {
        format!("{config}\n---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{name: mesh-default, namespace: istio-system}}\nspec:\n  tracing:\n  - providers: [{{name: tracer}}]\n    randomSamplingPercentage: 100\n    match: {{mode: SERVER}}\n")
    });
    // Once the Telemetry is in force, a traced request's spans are the servers' alone.
    let trace = format!("{:032x}", own_trace_id());
    let of_trace = || -> Vec<SeenSpan> {
        zipkin
            .seen()
            .into_iter()
            .filter(|s| s.trace_id == trace)
            .collect()
    };
    eventually(Duration::from_secs(15), "server spans of the trace", || {
        mesh.chains(
            1,
            &[&format!("traceparent: 00-{trace}-c7ad6b7169203331-01")],
        );
        std::thread::sleep(Duration::from_millis(700));
        of_trace().iter().filter(|s| s.kind == SERVER).count() >= 2
    });
    let spans = of_trace();
    assert!(spans.iter().all(|s| s.kind == SERVER), "{spans:#?}");
    assert!(
        !spans
            .iter()
            .any(|s| s.service.starts_with("istio-ingressgateway")),
        "the gateway is a client: {spans:#?}"
    );
}

/// A trace id of the test's own.
fn own_trace_id() -> u128 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    nanos ^ (u128::from(std::process::id()) << 64) | 1
}

/// OTLP's `SpanKind`s.
const SERVER: i32 = 2;
const CLIENT: i32 = 3;

#[test]
fn a_trace_links_the_gateway_and_every_sidecar_hop_over_otlp_grpc() {
    let otlp = Otlp::grpc();
    let provider = format!(
        "- name: tracer\n  opentelemetry: {{service: 127.0.0.1, port: {}}}\n",
        otlp.port
    );
    let hops = hops_through_bookinfo(&provider, || otlp.spans());
    assert_eq!(hops[1].attributes["http.status_code"], "200");
    assert!(!hops[1].error, "{:?}", hops[1]);
    assert_eq!(hops[1].attributes["istio.namespace"], "default");
    assert_eq!(hops[1].attributes["http.method"], "GET");
}

#[test]
fn spans_reach_an_otlp_http_collector_from_the_gateway() {
    let otlp = Otlp::http();
    let provider = format!(
        "- name: tracer\n  opentelemetry:\n    service: 127.0.0.1\n    port: {}\n    http: {{path: /otlp/v1/traces, timeout: 5s}}\n",
        otlp.port
    );
    let (mesh, http) = traced_gateway("otlp-http", &provider, "");
    let out = curl(&[
        "-s",
        "-H",
        HOST,
        "-H",
        "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        &format!("http://127.0.0.1:{http}/traced?status=503"),
    ]);
    let seen = seen_traceparent(&out.stdout);
    let id = seen.split('-').nth(2).unwrap_or_default().to_string();
    eventually(Duration::from_secs(10), "the gateway's span", || {
        otlp.spans().iter().any(|s| s.id == id)
    });
    let span = otlp.spans().into_iter().find(|s| s.id == id).unwrap();
    assert_eq!(span.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(span.parent, "00f067aa0ba902b7");
    assert_eq!(span.kind, CLIENT);
    assert!(span.service.starts_with("istio-ingressgateway"), "{span:?}");
    assert_eq!(span.attributes["http.status_code"], "503");
    assert!(span.error, "a 5xx span's status is ERROR: {span:?}");
    assert_eq!(span.attributes["team"], "platform");
    assert!(
        span.attributes["upstream_cluster"].contains("app"),
        "{span:?}"
    );
    let paths = otlp.paths.lock().unwrap().clone();
    assert!(
        paths.contains(&"POST /otlp/v1/traces".to_string()),
        "{paths:?}"
    );
    assert!(
        paths.contains(&"application/x-protobuf".to_string()),
        "{paths:?}"
    );
    // Envoy's tracer stats, under the OpenTelemetry tracer's name.
    let stats = format!("http://127.0.0.1:{}/stats", mesh.admin);
    eventually(Duration::from_secs(5), "the span counted as sent", || {
        String::from_utf8_lossy(&curl(&[&stats]).stdout)
            .contains("tracing.opentelemetry.spans_sent: 1")
    });
}

#[test]
fn telemetry_modes_and_metric_overrides_apply_per_side_in_the_mesh() {
    let mesh = support::bookinfo::Bookinfo::start();
    assert_eq!(mesh.chains(2, &[]).values().sum::<usize>(), 2);
    // Istio's standard labels before any override.
    let before = mesh.requests_total("productpage-v1-sidecar");
    assert!(
        before.iter().all(|l| !l.contains("request_host=")),
        "{before:?}"
    );
    mesh.edit(|config| {
        format!(
            "{config}\n---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{name: mesh-default, namespace: istio-system}}\nspec:\n  accessLogging:\n  - match: {{mode: SERVER}}\n    providers: [{{name: envoy}}]\n  metrics:\n  - providers: [{{name: prometheus}}]\n    overrides:\n    - match: {{metric: REQUEST_COUNT, mode: CLIENT}}\n      tagOverrides:\n        request_host: {{value: request.host}}\n        request_method: {{value: request.method}}\n        destination_canonical_revision: {{operation: REMOVE}}\n    - match: {{metric: REQUEST_SIZE}}\n      disabled: true\n"
        )
    });
    let metrics_of = |step: &str| {
        let port = mesh
            .steps
            .iter()
            .find(|s| s.name == step)
            .and_then(|s| s.status_port)
            .unwrap();
        String::from_utf8_lossy(
            &curl(&["-s", &format!("http://127.0.0.1:{port}/stats/prometheus")]).stdout,
        )
        .into_owned()
    };
    // The overrides reach the sidecars; a request made after that shows them.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !mesh
        .requests_total("productpage-v1-sidecar")
        .iter()
        .any(|l| l.contains("request_host=\"details:"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the tag overrides applied: {:#?}\n{}",
            mesh.requests_total("productpage-v1-sidecar"),
            mesh.proxy_status()
        );
        mesh.chains(1, &[]);
        std::thread::sleep(Duration::from_millis(200));
    }
    let lines = mesh.requests_total("productpage-v1-sidecar");
    let client = lines
        .iter()
        .find(|l| l.contains("request_host=\"details:"))
        .unwrap();
    assert!(client.contains("reporter=\"source\""), "{client}");
    assert!(client.contains("request_method=\"GET\""), "{client}");
    assert!(
        !client.contains("destination_canonical_revision="),
        "removed: {client}"
    );
    // The server side of the same sidecar keeps Istio's labels.
    let server = lines
        .iter()
        .rfind(|l| l.contains("reporter=\"destination\""))
        .unwrap_or_else(|| panic!("{lines:?}"));
    assert!(
        server.contains("destination_canonical_revision=\"v1\""),
        "{server}"
    );
    assert!(!server.contains("request_host="), "{server}");
    // The request size histogram is off from now on; the response size stays.
    let text = metrics_of("productpage-v1-sidecar");
    mesh.chains(3, &[]);
    let again = metrics_of("productpage-v1-sidecar");
    let sum = |text: &str, name: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert_eq!(
        sum(&text, "istio_request_bytes_count{"),
        sum(&again, "istio_request_bytes_count{"),
        "no request sizes are counted any more"
    );
    assert!(
        sum(&again, "istio_response_bytes_count{") > sum(&text, "istio_response_bytes_count{"),
        "response sizes still are"
    );
    // The access log is on for what each sidecar serves, not for what it sends.
    let productpage = &mesh.procs["productpage-v1-sidecar"];
    let details = &mesh.procs["details-v1-sidecar"];
    eventually(Duration::from_secs(5), "inbound requests logged", || {
        productpage.stdout().contains("GET /productpage")
            && details.stdout().contains("GET /details/0")
    });
    assert!(
        !productpage.stdout().contains("/details/0"),
        "productpage's calls to details are not logged by its sidecar:\n{}",
        productpage.stdout()
    );
}
