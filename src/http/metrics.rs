//! Request metrics in the Prometheus text format: a counter and a latency histogram per
//! (interaction, status). <https://prometheus.io/docs/instrumenting/exposition_formats/>

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Default, Clone)]
struct Series {
    count: u64,
    sum: f64,
    buckets: [u64; BUCKETS.len()],
}

#[derive(Default)]
pub struct Metrics {
    series: Mutex<BTreeMap<(&'static str, u16), Series>>,
}

impl Metrics {
    pub fn record(&self, interaction: &'static str, status: u16, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let s = series.entry((interaction, status)).or_default();
        s.count += 1;
        s.sum += secs;
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                s.buckets[i] += 1;
            }
        }
    }

    pub fn render(&self) -> String {
        let series = self
            .series
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut out = String::new();
        out.push_str(
            "# HELP hearth_http_requests_total HTTP requests by FHIR interaction and status.\n",
        );
        out.push_str("# TYPE hearth_http_requests_total counter\n");
        for ((interaction, status), s) in &series {
            let _ = writeln!(out, "hearth_http_requests_total{{interaction=\"{interaction}\",status=\"{status}\"}} {}", s.count);
        }
        out.push_str("# HELP hearth_http_request_duration_seconds Time to answer, by FHIR interaction and status.\n");
        out.push_str("# TYPE hearth_http_request_duration_seconds histogram\n");
        for ((interaction, status), s) in &series {
            let labels = format!("interaction=\"{interaction}\",status=\"{status}\"");
            for (bound, n) in BUCKETS.iter().zip(s.buckets) {
                let _ = writeln!(
                    out,
                    "hearth_http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "hearth_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                s.count
            );
            let _ = writeln!(
                out,
                "hearth_http_request_duration_seconds_sum{{{labels}}} {}",
                s.sum
            );
            let _ = writeln!(
                out,
                "hearth_http_request_duration_seconds_count{{{labels}}} {}",
                s.count
            );
        }
        out
    }
}

/// The FHIR interaction a route and method stand for (route templates, never concrete paths,
/// so that no id or query value reaches metrics or logs).
pub fn interaction(method: &axum::http::Method, route: Option<&str>) -> &'static str {
    use axum::http::Method as M;
    let route = route.unwrap_or("");
    match (route, method) {
        ("/fhir/metadata", _) => "capabilities",
        ("/fhir/_history", _) => "history-system",
        ("/fhir/{type}", &M::POST) => "create",
        ("/fhir/{type}", &M::GET) => "search-type",
        ("/fhir/{type}", &M::PUT) => "conditional-update",
        ("/fhir/{type}", &M::DELETE) => "conditional-delete",
        ("/fhir/{type}/_search", _) => "search-type",
        ("/fhir" | "/fhir/", &M::POST) => "transaction",
        ("/fhir" | "/fhir/" | "/fhir/_search", _) => "search-system",
        ("/fhir/{type}/{id}/{compartment_type}", &M::POST) => "operation",
        ("/fhir/{type}/$find" | "/fhir/{type}/$book", _) => "operation",
        ("/fhir/{type}/{id}/{compartment_type}", _) => "search-compartment",
        ("/fhir/{type}/{id}", &M::PATCH) => "patch",
        ("/fhir/{type}/_history", _) => "history-type",
        ("/fhir/{type}/{id}", &M::GET) => "read",
        ("/fhir/{type}/{id}", &M::PUT) => "update",
        ("/fhir/{type}/{id}", &M::DELETE) => "delete",
        ("/fhir/{type}/{id}/_history", _) => "history-instance",
        ("/fhir/{type}/{id}/_history/{vid}", _) => "vread",
        ("/healthz" | "/readyz" | "/metrics", _) => "operations",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_histograms() {
        let m = Metrics::default();
        m.record("read", 200, Duration::from_millis(3));
        m.record("read", 200, Duration::from_millis(30));
        let text = m.render();
        assert!(text.contains("hearth_http_requests_total{interaction=\"read\",status=\"200\"} 2"));
        assert!(text.contains("le=\"0.005\"} 1"));
        assert!(text.contains("le=\"0.05\"} 2"));
    }
}
