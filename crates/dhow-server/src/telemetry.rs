//! OpenTelemetry traces, off unless `otlp_endpoint` is set: `tracing` spans exported over
//! OTLP/gRPC by a batch processor, sampled by `trace_sample_ratio` (a caller's sampled
//! `traceparent` always wins: parent-based). The only module that knows OpenTelemetry.
//!
//! - the RPC span is the `grpc` span every call has (`server.rs`): with tracing on it is
//!   named after the method and made a child of the W3C `traceparent` in the call's metadata;
//!   handlers add attributes to it ([`rpc_attr`]) and mark failures ([`rpc_error`]);
//! - the sampling decision is made once, when the RPC span is made ([`rpc_span`]): the
//!   caller's `traceparent` flag if it sent one, else one call in `1 / trace_sample_ratio`
//!   (a counter, no random draw). An unsampled call's span has the target `grpc`, which the
//!   OpenTelemetry layer does not take: it costs what the span costs with tracing off;
//! - child spans (consistency wait, engine evaluation, Raft write) exist only under a sampled
//!   RPC span ([`sampled`], [`child`]): an unsampled call, or any call with tracing off,
//!   creates none and allocates nothing for them;
//! - below the server, Raft carries the caller's `traceparent` as plain text in the entry's
//!   context (hooks set here with `RaftHandle::set_trace_hooks`), so the apply on every node,
//!   the leader of a forwarded write included, joins the caller's trace.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{Status, TraceContextExt, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// True once [`Telemetry::start`] succeeded: spans are exported.
static ON: AtomicBool = AtomicBool::new(false);

/// The sampling ratio of calls without a caller's decision, in millionths.
static RATIO_PPM: AtomicU64 = AtomicU64::new(0);

/// Calls decided by the ratio so far.
static DECIDED: AtomicU64 = AtomicU64::new(0);

/// The target of the span of a call that is not sampled: the OpenTelemetry layer takes only
/// spans whose target starts with `dhow`, so it never sees these.
const UNSAMPLED: &str = "grpc";

/// Is the next call without a caller's decision sampled? One in `1 / ratio`, spread evenly:
/// call n is sampled when `floor((n + 1) * ratio) > floor(n * ratio)`.
fn by_ratio() -> bool {
    let ppm = RATIO_PPM.load(Ordering::Relaxed);
    if ppm == 0 {
        return false;
    }
    spread(DECIDED.fetch_add(1, Ordering::Relaxed), ppm)
}

/// Is call `n` one of those a ratio of `ppm` millionths samples?
fn spread(n: u64, ppm: u64) -> bool {
    (n + 1) * ppm / 1_000_000 > n * ppm / 1_000_000
}

/// The sampled flag of a W3C `traceparent` (`00-TRACEID-SPANID-FLAGS`), if it has one.
fn parent_sampled(traceparent: &str) -> Option<bool> {
    let flags = traceparent.trim().rsplit('-').next()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(flags & 1 == 1)
}

/// Is tracing on (an exporter configured)? One relaxed load: the check every hook makes
/// first, so that with tracing off nothing else runs.
#[inline]
pub fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

/// Why tracing could not start.
#[derive(Debug, thiserror::Error)]
#[error("otlp_endpoint {endpoint}: {message}")]
pub struct TelemetryError {
    endpoint: String,
    message: String,
}

/// The running exporter; [`Telemetry::shutdown`] sends what is still buffered.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Starts exporting to `endpoint` (OTLP/gRPC, plaintext: `http://127.0.0.1:4317`), sampling
    /// root spans at `ratio`, the resource naming service `dhow` (or `OTEL_SERVICE_NAME`)
    /// and this node. Must run inside a Tokio runtime (the exporter's channel lives on it);
    /// the batch processor honours `OTEL_BSP_SCHEDULE_DELAY` and the other `OTEL_BSP_*`
    /// variables. Returns the layer to add to the subscriber.
    pub fn start<S>(
        endpoint: &str,
        ratio: f64,
        node_id: u64,
    ) -> Result<(Telemetry, impl Layer<S>), TelemetryError>
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()
            .map_err(|e| TelemetryError {
                endpoint: endpoint.to_string(),
                message: e.to_string(),
            })?;
        let mut resource = Resource::builder();
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name("dhow");
        }
        let resource = resource
            .with_attribute(KeyValue::new("service.instance.id", node_id.to_string()))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            // The ratio is applied by `rpc_span` before a span reaches the layer: what
            // reaches it is sampled (and its children follow it).
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("dhow");
        let layer = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            // Only what the spans say: no thread names (an allocation per span), no targets or
            // source locations, no busy/idle clocks on every poll, no context activation on enter.
            .with_threads(false)
            .with_target(false)
            .with_location(false)
            .with_tracked_inactivity(false)
            .with_context_activation(false)
            .with_filter(
                tracing_subscriber::filter::filter_fn(|m| {
                    // Dhow's spans, and the warnings and errors logged inside them as events.
                    if m.is_span() {
                        m.target().starts_with("dhow")
                    } else {
                        *m.level() <= tracing::Level::WARN
                    }
                })
                // Nothing below INFO: without this hint the layer would switch on every
                // debug and trace callsite of the libraries (h2, hyper, tonic), and each of
                // their events would be filtered call by call.
                .with_max_level_hint(tracing::level_filters::LevelFilter::INFO),
            );
        dhow_raft::RaftHandle::set_trace_hooks(current_traceparent, set_parent);
        RATIO_PPM.store(
            (ratio.clamp(0.0, 1.0) * 1e6).round() as u64,
            Ordering::Relaxed,
        );
        ON.store(true, Ordering::Relaxed);
        Ok((Telemetry { provider }, layer))
    }

    /// Exports what is buffered and stops, waiting at most 2 s for the collector (blocks:
    /// call outside async code, while the runtime still runs).
    pub fn shutdown(self) {
        ON.store(false, Ordering::Relaxed);
        if let Err(e) = self
            .provider
            .shutdown_with_timeout(std::time::Duration::from_secs(2))
        {
            tracing::warn!(error = %e, "tracing: the last spans were not exported");
        }
    }
}

/// gRPC metadata (HTTP headers) as a propagator reads it.
struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// One `traceparent` as a propagator reads it.
struct TraceParent<'a>(&'a str);

impl Extractor for TraceParent<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == "traceparent").then_some(self.0)
    }
    fn keys(&self) -> Vec<&str> {
        vec!["traceparent"]
    }
}

/// The span of one call (`trace_fn` of the server): named `grpc` with its `method` for the
/// log; with tracing on and the call sampled also named after the method for the trace, a
/// server span, and the child of the caller's `traceparent` (and `tracestate`) if its
/// metadata has one.
pub fn rpc_span(req: &http::Request<()>) -> Span {
    let path = req.uri().path();
    if !enabled() {
        return tracing::info_span!("grpc", method = %path);
    }
    let traceparent = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok());
    let sampled = match traceparent.map(parent_sampled) {
        Some(Some(flag)) => flag,
        // No decision from the caller (or one that does not parse): the ratio decides.
        _ => by_ratio(),
    };
    if !sampled {
        return tracing::info_span!(target: UNSAMPLED, "grpc", method = %path);
    }
    let name = path.strip_prefix('/').unwrap_or(path);
    let (service, method) = name.split_once('/').unwrap_or((name, ""));
    let span = tracing::info_span!(
        "grpc",
        method = %path,
        otel.name = %name,
        otel.kind = "server",
    );
    if req.headers().contains_key("traceparent") {
        let parent = TraceContextPropagator::new().extract(&Headers(req.headers()));
        let _ = span.set_parent(parent);
    }
    // Attributes of the trace only, not fields of the log's span.
    span.set_attribute("rpc.system", "grpc");
    span.set_attribute("rpc.service", service.to_string());
    span.set_attribute("rpc.method", method.to_string());
    span
}

/// Is the current span sampled (tracing on, and this call is traced)? An unsampled call's
/// span answers from its target alone, read from the subscriber's current span without
/// taking a handle to it (`Span::current()` costs a reference count up and down in the
/// registry, on every call); only a call that may be sampled takes one.
pub fn sampled() -> bool {
    if !enabled() {
        return false;
    }
    let maybe = tracing::dispatcher::get_default(|d| {
        d.current_span()
            .metadata()
            .is_some_and(|m| m.target() != UNSAMPLED)
    });
    maybe && Span::current().context().span().span_context().is_sampled()
}

/// The span `make` creates, as a child of the current span, if the current span is sampled;
/// otherwise a disabled span (nothing created).
#[inline]
pub fn child(make: impl FnOnce() -> Span) -> Span {
    if sampled() {
        make()
    } else {
        Span::none()
    }
}

/// Sets an attribute of the current (RPC) span if it is sampled. `value` is computed only
/// then.
#[inline]
pub fn rpc_attr<V: Into<opentelemetry::Value>>(key: &'static str, value: impl FnOnce() -> V) {
    if sampled() {
        Span::current().set_attribute(key, value());
    }
}

/// Sets attributes of the current (RPC) span if it is sampled; `attrs` is called only then.
#[inline]
pub fn rpc_attrs<const N: usize>(
    attrs: impl FnOnce() -> [(&'static str, opentelemetry::Value); N],
) {
    if sampled() {
        let span = Span::current();
        for (key, value) in attrs() {
            span.set_attribute(key, value);
        }
    }
}

/// The name of an answer, as the `dhow.result` attribute says it.
pub fn result_name(p: &dhow_engine::Permissionship) -> &'static str {
    match p {
        dhow_engine::Permissionship::Allowed => "allowed",
        dhow_engine::Permissionship::Denied => "denied",
        dhow_engine::Permissionship::Conditional { .. } => "conditional",
    }
}

/// Sets an attribute of `span` (a child span; nothing if it is disabled).
pub fn span_attr<V: Into<opentelemetry::Value>>(span: &Span, key: &'static str, value: V) {
    if !span.is_none() {
        span.set_attribute(key, value);
    }
}

/// Marks the current (RPC) span failed with the gRPC code and reason, if it is sampled.
pub fn rpc_error(code: tonic::Code, reason: &str, message: &str) {
    if sampled() {
        let span = Span::current();
        span.set_attribute("rpc.grpc.status_code", code as i64);
        if !reason.is_empty() {
            span.set_attribute("dhow.error.reason", reason.to_string());
        }
        span.set_status(Status::error(message.to_string()));
    }
}

/// The Raft hook: the W3C `traceparent` of the current span, if it is sampled.
fn current_traceparent() -> Option<String> {
    let cx = Span::current().context();
    let span = cx.span();
    let sc = span.span_context();
    (sc.is_valid() && sc.is_sampled()).then(|| {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}

/// The Raft hook: makes `span` a child of the remote `traceparent`.
fn set_parent(span: &Span, traceparent: &str) {
    let parent = TraceContextPropagator::new().extract(&TraceParent(traceparent));
    let _ = span.set_parent(parent);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_is_read_from_its_header() {
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let cx = TraceContextPropagator::new().extract(&TraceParent(tp));
        let span = cx.span();
        let sc = span.span_context();
        assert!(sc.is_remote() && sc.is_sampled());
        assert_eq!(
            sc.trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(sc.span_id().to_string(), "b7ad6b7169203331");
        let mut headers = http::HeaderMap::new();
        headers.insert("traceparent", tp.parse().unwrap());
        let cx = TraceContextPropagator::new().extract(&Headers(&headers));
        assert_eq!(
            cx.span().span_context().span_id().to_string(),
            "b7ad6b7169203331"
        );
    }

    #[test]
    fn the_ratio_samples_that_share_of_calls_evenly() {
        let count = |ppm: u64, calls: u64| (0..calls).filter(|n| spread(*n, ppm)).count();
        assert_eq!(count(10_000, 1000), 10, "1% of 1,000 calls");
        assert_eq!(count(1_000_000, 50), 50, "every call");
        assert_eq!(count(0, 50), 0, "none");
        assert_eq!(count(250_000, 400), 100, "a quarter");
        // Evenly: never two sampled calls in a row at 1%.
        assert!((0..1000u64).all(|n| !(spread(n, 10_000) && spread(n + 1, 10_000))));
    }

    #[test]
    fn a_callers_decision_is_read_from_its_traceparent() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7";
        assert_eq!(parent_sampled(&format!("00-{id}-01")), Some(true));
        assert_eq!(parent_sampled(&format!("00-{id}-00")), Some(false));
        assert_eq!(parent_sampled("garbage-zz"), None);
    }

    #[test]
    fn off_by_default_and_then_nothing_is_sampled() {
        assert!(!enabled());
        assert!(!sampled());
        assert!(child(|| tracing::info_span!("x")).is_none());
    }
}
