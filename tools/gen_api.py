#!/usr/bin/env python3
"""Generates meshwork's typed Istio resources from Istio's CRD bundle.

    python3 tools/gen_api.py ../shared/reference/istio-crd-all.gen.yaml

The bundle is not kept in this tree: CI and developers have it in ../shared/reference/
beside the checkout. Reads it and writes
  crates/api/src/generated/{common,networking,security,telemetry}.rs  (serde types)
  crates/api/schema/istio-schemas.json                                  (compact schemas
      without descriptions, used at run time for structural and CEL validation)
Every field of every supported kind becomes a typed Rust field; identical object
schemas share one type. Names follow Istio's protobuf message names (see NAMES).
The generated code keeps the facts of the API (names, types, enums, required fields,
bounds) and none of Istio's descriptions: each doc comment names the field's path in
its kind and points to the kind's page in Istio's reference (REFERENCE).
"""
import json
import os
import re
import subprocess
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if len(sys.argv) != 2:
    raise SystemExit("usage: python3 tools/gen_api.py path/to/istio-crd-all.gen.yaml "
                     "(CI and developers: ../shared/reference/istio-crd-all.gen.yaml)")
SRC = sys.argv[1]
OUT_DIR = os.path.join(ROOT, "crates/api/src/generated")
SCHEMA_OUT = os.path.join(ROOT, "crates/api/schema/istio-schemas.json")

# kind -> module
KINDS = {
    "Gateway": "networking", "VirtualService": "networking", "DestinationRule": "networking",
    "ServiceEntry": "networking", "Sidecar": "networking", "WorkloadEntry": "networking",
    "WorkloadGroup": "networking",
    "PeerAuthentication": "security", "AuthorizationPolicy": "security",
    "RequestAuthentication": "security",
    "Telemetry": "telemetry",
}

# kind -> its page in Istio's reference, where every field is described.
REFERENCE = {
    "Gateway": "networking/gateway", "VirtualService": "networking/virtual-service",
    "DestinationRule": "networking/destination-rule", "ServiceEntry": "networking/service-entry",
    "Sidecar": "networking/sidecar", "WorkloadEntry": "networking/workload-entry",
    "WorkloadGroup": "networking/workload-group",
    "PeerAuthentication": "security/peer_authentication",
    "AuthorizationPolicy": "security/authorization-policy",
    "RequestAuthentication": "security/request_authentication",
    "Telemetry": "telemetry",
}

# Schema path (first place a shape is seen) -> Rust type name (Istio's message names).
NAMES = {
    "DestinationRule": "DestinationRuleSpec",
    "DestinationRule.subsets[]": "Subset",
    "DestinationRule.subsets[].trafficPolicy": "TrafficPolicy",
    "DestinationRule.subsets[].trafficPolicy.connectionPool": "ConnectionPoolSettings",
    "DestinationRule.subsets[].trafficPolicy.connectionPool.http": "HttpConnectionPoolSettings",
    "DestinationRule.subsets[].trafficPolicy.connectionPool.http.http2KeepAlive": "Http2KeepAlive",
    "DestinationRule.subsets[].trafficPolicy.connectionPool.tcp": "TcpConnectionPoolSettings",
    "DestinationRule.subsets[].trafficPolicy.connectionPool.tcp.tcpKeepalive": "TcpKeepalive",
    "DestinationRule.subsets[].trafficPolicy.loadBalancer": "LoadBalancerSettings",
    "DestinationRule.subsets[].trafficPolicy.loadBalancer.backendUtilization": "BackendUtilizationSettings",
    "DestinationRule.subsets[].trafficPolicy.loadBalancer.consistentHash": "ConsistentHashLb",
    "DestinationRule.subsets[].trafficPolicy.loadBalancer.consistentHash.httpCookie": "HttpCookie",
    "DestinationRule.subsets[].trafficPolicy.loadBalancer.consistentHash.httpCookie.attributes[]": "CookieAttribute",
    "DestinationRule.subsets[].trafficPolicy.loadBalancer.consistentHash.maglev": "MagLev",
    "DestinationRule.subsets[].trafficPolicy.loadBalancer.consistentHash.ringHash": "RingHash",
    "DestinationRule.subsets[].trafficPolicy.loadBalancer.localityLbSetting": "LocalityLbSetting",
    "DestinationRule.subsets[].trafficPolicy.loadBalancer.localityLbSetting.distribute[]": "LocalityDistribute",
    "DestinationRule.subsets[].trafficPolicy.loadBalancer.localityLbSetting.failover[]": "LocalityFailover",
    "DestinationRule.subsets[].trafficPolicy.loadBalancer.warmup": "WarmupConfiguration",
    "DestinationRule.subsets[].trafficPolicy.loadBalancer.zoneAwareLbSetting": "ZoneAwareLbSetting",
    "DestinationRule.subsets[].trafficPolicy.outlierDetection": "OutlierDetection",
    "DestinationRule.subsets[].trafficPolicy.portLevelSettings[]": "PortTrafficPolicy",
    "DestinationRule.subsets[].trafficPolicy.portLevelSettings[].port": "PortSelector",
    "DestinationRule.subsets[].trafficPolicy.portLevelSettings[].tls": "ClientTlsSettings",
    "DestinationRule.subsets[].trafficPolicy.proxyProtocol": "ProxyProtocol",
    "DestinationRule.subsets[].trafficPolicy.retryBudget": "RetryBudget",
    "DestinationRule.subsets[].trafficPolicy.tunnel": "TunnelSettings",
    "DestinationRule.workloadSelector": "WorkloadSelector",
    "Gateway": "GatewaySpec",
    "Gateway.servers[]": "Server",
    "Gateway.servers[].port": "ServerPort",
    "Gateway.servers[].tls": "ServerTlsSettings",
    "Gateway.servers[].tls.tlsCertificates[]": "TlsCertificate",
    "ServiceEntry": "ServiceEntrySpec",
    "ServiceEntry.endpoints[]": "WorkloadEntrySpec",
    "ServiceEntry.ports[]": "ServicePort",
    "ServiceEntry.workloadSelector": "WorkloadLabelSelector",
    "Sidecar": "SidecarSpec",
    "Sidecar.egress[]": "IstioEgressListener",
    "Sidecar.egress[].port": "SidecarPort",
    "Sidecar.ingress[]": "IstioIngressListener",
    "Sidecar.outboundTrafficPolicy": "OutboundTrafficPolicy",
    "Sidecar.outboundTrafficPolicy.egressProxy": "Destination",
    "VirtualService": "VirtualServiceSpec",
    "VirtualService.http[]": "HttpRoute",
    "VirtualService.http[].corsPolicy": "CorsPolicy",
    "VirtualService.http[].corsPolicy.allowOrigins[]": "StringMatch",
    "VirtualService.http[].delegate": "Delegate",
    "VirtualService.http[].directResponse": "HttpDirectResponse",
    "VirtualService.http[].directResponse.body": "HttpBody",
    "VirtualService.http[].fault": "HttpFaultInjection",
    "VirtualService.http[].fault.abort": "Abort",
    "VirtualService.http[].fault.abort.percentage": "Percent",
    "VirtualService.http[].fault.delay": "Delay",
    "VirtualService.http[].headers": "Headers",
    "VirtualService.http[].headers.request": "HeaderOperations",
    "VirtualService.http[].match[]": "HttpMatchRequest",
    "VirtualService.http[].mirrors[]": "HttpMirrorPolicy",
    "VirtualService.http[].redirect": "HttpRedirect",
    "VirtualService.http[].retries": "HttpRetry",
    "VirtualService.http[].retries.backoff": "RetryBackoff",
    "VirtualService.http[].rewrite": "HttpRewrite",
    "VirtualService.http[].rewrite.uriRegexRewrite": "RegexRewrite",
    "VirtualService.http[].route[]": "HttpRouteDestination",
    "VirtualService.tcp[]": "TcpRoute",
    "VirtualService.tcp[].match[]": "L4MatchAttributes",
    "VirtualService.tcp[].route[]": "RouteDestination",
    "VirtualService.tls[]": "TlsRoute",
    "VirtualService.tls[].match[]": "TlsMatchAttributes",
    "WorkloadEntry": "WorkloadEntrySpec",
    "WorkloadGroup": "WorkloadGroupSpec",
    "WorkloadGroup.metadata": "WorkloadGroupMetadata",
    "WorkloadGroup.probe": "ReadinessProbe",
    "WorkloadGroup.probe.exec": "ExecHealthCheckConfig",
    "WorkloadGroup.probe.grpc": "GrpcHealthCheckConfig",
    "WorkloadGroup.probe.httpGet": "HttpHealthCheckConfig",
    "WorkloadGroup.probe.httpGet.httpHeaders[]": "HttpHeader",
    "WorkloadGroup.probe.tcpSocket": "TcpHealthCheckConfig",
    "WorkloadGroup.template": "WorkloadTemplate",
    "AuthorizationPolicy": "AuthorizationPolicySpec",
    "AuthorizationPolicy.provider": "ExtensionProvider",
    "AuthorizationPolicy.rules[]": "Rule",
    "AuthorizationPolicy.rules[].from[]": "RuleFrom",
    "AuthorizationPolicy.rules[].from[].source": "Source",
    "AuthorizationPolicy.rules[].to[]": "RuleTo",
    "AuthorizationPolicy.rules[].to[].operation": "Operation",
    "AuthorizationPolicy.rules[].when[]": "Condition",
    "AuthorizationPolicy.targetRef": "PolicyTargetReference",
    "PeerAuthentication": "PeerAuthenticationSpec",
    "PeerAuthentication.mtls": "MutualTls",
    "RequestAuthentication": "RequestAuthenticationSpec",
    "RequestAuthentication.jwtRules[]": "JwtRule",
    "RequestAuthentication.jwtRules[].fromHeaders[]": "JwtHeader",
    "RequestAuthentication.jwtRules[].outputClaimToHeaders[]": "ClaimToHeader",
    "Telemetry": "TelemetrySpec",
    "Telemetry.accessLogging[]": "AccessLogging",
    "Telemetry.accessLogging[].filter": "AccessLoggingFilter",
    "Telemetry.accessLogging[].match": "WorkloadModeSelector",
    "Telemetry.accessLogging[].providers[]": "ProviderRef",
    "Telemetry.metrics[]": "Metrics",
    "Telemetry.metrics[].overrides[]": "MetricsOverrides",
    "Telemetry.metrics[].overrides[].match": "MetricSelector",
    "Telemetry.metrics[].overrides[].tagOverrides{}": "TagOverride",
    "Telemetry.tracing[]": "Tracing",
    "Telemetry.tracing[].customTags{}": "CustomTag",
    "Telemetry.tracing[].customTags{}.environment": "EnvironmentTag",
    "Telemetry.tracing[].customTags{}.formatter": "FormatterTag",
    "Telemetry.tracing[].customTags{}.header": "RequestHeaderTag",
    "Telemetry.tracing[].customTags{}.literal": "LiteralTag",
}

# Enum names, by the path of their first appearance.
ENUM_NAMES = {
    "DestinationRule.subsets[].trafficPolicy.connectionPool.http.h2UpgradePolicy": "H2UpgradePolicy",
    "DestinationRule.subsets[].trafficPolicy.loadBalancer.simple": "SimpleLb",
    "DestinationRule.subsets[].trafficPolicy.portLevelSettings[].tls.mode": "ClientTlsMode",
    "DestinationRule.subsets[].trafficPolicy.proxyProtocol.version": "ProxyProtocolVersion",
    "Gateway.servers[].tls.maxProtocolVersion": "TlsProtocol",
    "Gateway.servers[].tls.mode": "ServerTlsMode",
    "ServiceEntry.location": "ServiceEntryLocation",
    "ServiceEntry.resolution": "ServiceEntryResolution",
    "Sidecar.egress[].captureMode": "CaptureMode",
    "Sidecar.outboundTrafficPolicy.mode": "OutboundTrafficPolicyMode",
    "VirtualService.http[].corsPolicy.unmatchedPreflights": "UnmatchedPreflights",
    "VirtualService.http[].redirect.derivePort": "RedirectPortSelection",
    "AuthorizationPolicy.action": "AuthorizationAction",
    "PeerAuthentication.mtls.mode": "MutualTlsMode",
    "RequestAuthentication.jwtRules[].presence": "JwtPresence",
    "Telemetry.accessLogging[].match.mode": "WorkloadMode",
    "Telemetry.metrics[].overrides[].match.metric": "IstioMetric",
    "Telemetry.metrics[].overrides[].tagOverrides{}.operation": "TagOperation",
}

RUST_KEYWORDS = {
    "as", "break", "const", "continue", "crate", "else", "enum", "extern", "false", "fn", "for", "if",
    "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref", "return", "self", "static",
    "struct", "super", "trait", "true", "type", "unsafe", "use", "where", "while", "async", "await", "dyn",
}


def strip(s):
    """The schema without descriptions: what decides validity and identity."""
    if isinstance(s, dict):
        return {k: strip(v) for k, v in s.items() if k != "description"}
    if isinstance(s, list):
        return [strip(x) for x in s]
    return s


def key(s):
    return json.dumps(strip(s), sort_keys=True)


def pascal(name):
    parts = re.split(r"[_\-.]", name)
    out = "".join(p[:1].upper() + p[1:] for p in parts if p)
    return out


def snake(name):
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    s = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", s)
    return s.lower()


def serde_camel(snake_name):
    """serde's rename_all = "camelCase" of a snake_case field name."""
    parts = snake_name.split("_")
    return parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:])


def variant(value):
    v = value.lower()
    out = "".join(p[:1].upper() + p[1:] for p in re.split(r"[_\-]", v) if p)
    if out[:1].isdigit():
        out = "V" + out
    return out


def doc(lines, indent=""):
    return "".join(f"{indent}///" + (" " + line if line else "") + "\n" for line in lines)


def field_path(path):
    """`VirtualService.http[].match` -> ("VirtualService", "spec.http[].match")."""
    kind, _, rest = path.partition(".")
    return kind, "spec" + ("." + rest if rest else "")


def reference(path):
    """Where Istio's reference describes the field at `path`."""
    kind, spec = field_path(path)
    url = f"https://istio.io/latest/docs/reference/config/{REFERENCE[kind]}/"
    return [f"{kind} `{spec}`.", f"See [Istio's reference]({url})."]


def facts(s, required):
    """The validation facts of a field's schema, in words."""
    out = []
    if required:
        out.append("Required.")
    for k, words in (("minimum", "At least"), ("maximum", "At most"),
                     ("minLength", "At least this many characters:"),
                     ("maxLength", "At most this many characters:"),
                     ("minItems", "At least this many items:"),
                     ("maxItems", "At most this many items:"),
                     ("maxProperties", "At most this many entries:")):
        if k in s:
            out.append(f"{words} {s[k]}.")
    if "format" in s:
        out.append(f"Format `{s['format']}`.")
    n = len(s.get("x-kubernetes-validations", []))
    if n:
        out.append(f"{n} CEL rule{'s' if n > 1 else ''} (in `istio-schemas.json`).")
    return out


MISSING = []


class Gen:
    def __init__(self):
        self.types = {}  # key -> dict(name, schema, module, kinds, path)
        self.order = []
        self.enums = {}  # key of enum values -> dict(name, values, module set)
        self.enum_order = []
        self.names = set()

    def name_for(self, path):
        if path in NAMES:
            return NAMES[path]
        MISSING.append(f"type {path}")
        return "Missing" + str(len(MISSING))

    def visit_object(self, schema, path, module):
        k = key(schema)
        if k in self.types:
            t = self.types[k]
            t["modules"].add(module)
            return t["name"]
        name = self.name_for(path)
        if name in self.names:
            raise SystemExit(f"gen_api: type name {name} used twice ({path})")
        self.names.add(name)
        t = {"name": name, "schema": schema, "modules": {module}, "path": path, "fields": None}
        self.types[k] = t
        self.order.append(k)
        fields = []
        required = set(schema.get("required", []))
        for prop, ps in schema["properties"].items():
            rty = self.rust_type(ps, f"{path}.{prop}", module)
            fields.append((prop, rty, ps, prop in required, f"{path}.{prop}"))
        t["fields"] = fields
        return name

    def visit_enum(self, schema, path, module):
        values = schema["enum"]
        if schema.get("type") != "string":
            raise SystemExit(f"gen_api: non-string enum at {path}")
        k = json.dumps(values)
        if k in self.enums:
            self.enums[k]["modules"].add(module)
            return self.enums[k]["name"]
        name = ENUM_NAMES.get(path)
        if name is None:
            MISSING.append(f"enum {path}")
            name = "Missing" + str(len(MISSING))
        self.names.add(name)
        self.enums[k] = {"name": name, "values": values, "modules": {module}, "path": path}
        self.enum_order.append(k)
        return name

    def rust_type(self, s, path, module):
        t = s.get("type")
        if "enum" in s:
            return self.visit_enum(s, path, module)
        if t == "object" and "properties" in s:
            return self.visit_object(s, path, module)
        if t == "object" and isinstance(s.get("additionalProperties"), dict):
            inner = self.rust_type(s["additionalProperties"], path + "{}", module)
            return f"BTreeMap<String, {inner}>"
        if t == "object":
            return "serde_json::Value"
        if t == "array":
            inner = self.rust_type(s["items"], path + "[]", module)
            return f"Vec<{inner}>"
        if t == "string":
            return "String"
        if t == "boolean":
            return "bool"
        if t == "number":
            return "f64"
        if t == "integer":
            lo, hi = s.get("minimum"), s.get("maximum")
            if lo is not None and lo >= 0:
                return "u32" if hi is not None and hi <= 4294967295 else "u64"
            return "i32" if s.get("format") == "int32" else "i64"
        raise SystemExit(f"gen_api: unsupported schema at {path}: {strip(s)}")


def field_decl(prop, rty, ps, required, path, aliases=()):
    fname = snake(prop)
    if fname in RUST_KEYWORDS:
        fname = fname + "_"
    attrs = []
    if serde_camel(fname) != prop:
        attrs.append(f'rename = "{prop}"')
    for alias in aliases:
        attrs.append(f'alias = "{alias}"')
    if rty.startswith("Vec<"):
        attrs.append('default, skip_serializing_if = "Vec::is_empty"')
        ty = rty
    elif rty.startswith("BTreeMap<"):
        attrs.append('default, skip_serializing_if = "BTreeMap::is_empty"')
        ty = rty
    elif required and rty == "String":
        ty = rty
    else:
        attrs.append('default, skip_serializing_if = "Option::is_none"')
        ty = f"Option<{rty}>"
    _, spec = field_path(path)
    out = doc([f"`{spec}`." + "".join(" " + f for f in facts(ps, required))], "    ")
    if attrs:
        out += f"    #[serde({', '.join(attrs)})]\n"
    out += f"    pub {fname}: {ty},\n"
    return out


def render_struct(t):
    out = doc(reference(t["path"]))
    out += "#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]\n"
    out += '#[serde(rename_all = "camelCase", deny_unknown_fields)]\n'
    out += f"pub struct {t['name']} {{\n"
    # Proto JSON accepts the original snake_case name too (`mirror_percent` beside
    # `mirrorPercent`): one Rust field, the other spelling as a serde alias.
    by_name = {}
    for f in t["fields"]:
        by_name.setdefault(snake(f[0]), []).append(f)
    for fs in by_name.values():
        fs.sort(key=lambda f: "_" in f[0])
        primary, aliases = fs[0], [f[0] for f in fs[1:]]
        out += field_decl(*primary, aliases=aliases)
    out += "}\n"
    return out


def render_enum(e):
    what, where = reference(e["path"])
    out = doc([f"The values of {what}", where])
    out += "#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]\n"
    out += f"pub enum {e['name']} {{\n"
    for i, v in enumerate(e["values"]):
        if i == 0:
            out += "    #[default]\n"
        out += f'    #[serde(rename = "{v}")]\n    {variant(v)},\n'
    out += "}\n\n"
    out += f"impl {e['name']} {{\n"
    out += "    /// The value as written in YAML.\n"
    out += "    pub fn as_str(self) -> &'static str {\n        match self {\n"
    for v in e["values"]:
        out += f'            Self::{variant(v)} => "{v}",\n'
    out += "        }\n    }\n}\n"
    return out


HEADER = """//! Generated by `tools/gen_api.py` from Istio's CRD bundle ({src}).
//! Do not edit: change the generator and run it again.
#![allow(clippy::doc_lazy_continuation, clippy::doc_overindented_list_items, rustdoc::all)]
"""


def main():
    docs = list(yaml.safe_load_all(open(SRC)))
    g = Gen()
    schemas = {}
    for d in docs:
        kind = d["spec"]["names"]["kind"]
        if kind not in KINDS:
            continue
        versions = d["spec"]["versions"]
        keys = {key(v["schema"]["openAPIV3Schema"]) for v in versions}
        if len(keys) != 1:
            raise SystemExit(f"gen_api: versions of {kind} differ; generate per version")
        top = versions[0]["schema"]["openAPIV3Schema"]
        g.visit_object(top["properties"]["spec"], kind, KINDS[kind])
        schemas[kind] = {
            "group": d["spec"]["group"],
            "versions": [v["name"] for v in versions],
            "schema": strip(top),
        }

    def module_of(mods):
        return next(iter(mods)) if len(mods) == 1 else "common"

    files = {m: [] for m in ("common", "networking", "security", "telemetry")}
    for k in g.enum_order:
        e = g.enums[k]
        files[module_of(e["modules"])].append(render_enum(e))
    for k in g.order:
        t = g.types[k]
        files[module_of(t["modules"])].append(render_struct(t))
    if MISSING:
        raise SystemExit("gen_api: add names for:\n  " + "\n  ".join(MISSING))
    src_name = os.path.basename(SRC)
    for m, items in files.items():
        body = HEADER.format(src=src_name)
        body += "use serde::{Deserialize, Serialize};\n"
        body += "#[allow(unused_imports)]\nuse std::collections::BTreeMap;\n"
        if m != "common":
            body += "#[allow(unused_imports)]\nuse super::common::*;\n"
        if m == "security":
            body += "#[allow(unused_imports)]\nuse super::networking::*;\n"
        if m == "telemetry":
            body += "#[allow(unused_imports)]\nuse super::{networking::*, security::*};\n"
        if m == "networking":
            body += "#[allow(unused_imports)]\nuse super::security::*;\n"
        body += "\n" + "\n".join(items)
        with open(os.path.join(OUT_DIR, f"{m}.rs"), "w") as f:
            f.write(body)
    # Format as `cargo fmt` would, so a regeneration shows only real changes.
    subprocess.run(
        ["rustfmt", "--edition", "2024"] + [os.path.join(OUT_DIR, f"{m}.rs") for m in files],
        check=True,
    )
    with open(SCHEMA_OUT, "w") as f:
        json.dump(schemas, f, sort_keys=True, separators=(",", ":"))
        f.write("\n")
    print(f"gen_api: {len(g.order)} types, {len(g.enum_order)} enums, {len(schemas)} kinds")


if __name__ == "__main__":
    main()
