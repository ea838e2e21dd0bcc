//! mTLS export: `OTEL_EXPORTER_OTLP_CERTIFICATE`, `_CLIENT_CERTIFICATE` and `_CLIENT_KEY`, with
//! certificates made for the test, against a receiver that takes only clients whose certificate
//! its CA signed, over gRPC and over HTTP.

use std::{path::PathBuf, time::Duration};

use foundry::testing::{OtlpReceiver, new_traceparent};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

use crate::export::{child_service, child_value, is_child, run_child};

/// A CA, a server certificate for `localhost` and a client certificate, both signed by the CA,
/// as PEM files in a directory of their own.
struct Certificates {
    directory: PathBuf,
    server: (String, String),
    ca: String,
}

impl Certificates {
    fn make() -> Self {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let signed = |name: &str| {
            let key = KeyPair::generate().unwrap();
            let certificate = CertificateParams::new(vec![name.to_owned()])
                .unwrap()
                .signed_by(&key, &issuer)
                .unwrap();
            (certificate.pem(), key.serialize_pem())
        };
        let server = signed("localhost");
        let client = signed("foundry-child");
        let directory =
            std::env::temp_dir().join(format!("foundry-tls-{}", new_traceparent(true).0));
        std::fs::create_dir_all(&directory).unwrap();
        for (file, pem) in [
            ("ca.pem", &ca.pem()),
            ("client.pem", &client.0),
            ("client-key.pem", &client.1),
        ] {
            std::fs::write(directory.join(file), pem).unwrap();
        }
        Self {
            directory,
            server,
            ca: ca.pem(),
        }
    }

    fn path(&self, file: &str) -> String {
        self.directory.join(file).to_string_lossy().into_owned()
    }
}

impl Drop for Certificates {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}

#[tokio::test]
async fn spans_reach_an_mtls_collector_with_the_client_certificate_and_only_with_it() {
    if is_child() {
        return child_service().await;
    }
    let name = "tls::spans_reach_an_mtls_collector_with_the_client_certificate_and_only_with_it";
    let certificates = Certificates::make();
    // (protocol, the client certificate: none, the generic pair, or the traces' own pair beside
    // the generic CA, which still applies to them)
    let cases = [
        ("grpc", Some("OTEL_EXPORTER_OTLP")),
        ("grpc", None),
        ("http/protobuf", Some("OTEL_EXPORTER_OTLP")),
        ("http/protobuf", None),
        ("grpc", Some("OTEL_EXPORTER_OTLP_TRACES")),
        ("http/protobuf", Some("OTEL_EXPORTER_OTLP_TRACES")),
    ];
    for (protocol, client_pair) in cases {
        // Arrange: a receiver that asks for a client certificate its CA signed.
        let receiver = OtlpReceiver::start_tls(
            certificates.server.0.as_bytes(),
            certificates.server.1.as_bytes(),
            certificates.ca.as_bytes(),
        )
        .await
        .unwrap();
        let (trace_id, traceparent) = new_traceparent(true);
        let endpoint = match protocol {
            "grpc" => receiver.grpc_tls_endpoint(),
            _ => receiver.http_tls_endpoint(),
        };
        let (ca, client, client_key) = (
            certificates.path("ca.pem"),
            certificates.path("client.pem"),
            certificates.path("client-key.pem"),
        );
        let mut env = vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", ca.as_str()),
            ("CHILD_TRACEPARENT", traceparent.as_str()),
            ("CHILD_NO_RETRIES", "1"),
        ];
        let pair_variables = client_pair.map(|prefix| {
            [
                format!("{prefix}_CLIENT_CERTIFICATE"),
                format!("{prefix}_CLIENT_KEY"),
            ]
        });
        if let Some([certificate, key]) = &pair_variables {
            env.push((certificate.as_str(), client.as_str()));
            env.push((key.as_str(), client_key.as_str()));
        }

        // Act: one request, then shutdown flushes the spans.
        let output = run_child(name, &env).await;

        // Assert
        assert_eq!(child_value(&output, "status"), "200");
        let spans = receiver
            .wait_for_trace(&trace_id, Duration::from_secs(5), |s| !s.is_empty())
            .await;
        if client_pair.is_some() {
            assert_eq!(spans.len(), 1, "{protocol} {client_pair:?}: {spans:#?}");
        } else {
            assert!(
                spans.is_empty(),
                "{protocol}: no client certificate, no export"
            );
        }
    }
}

#[tokio::test]
async fn a_certificate_that_cannot_be_read_stops_the_service_naming_its_variable() {
    let certificates = Certificates::make();
    let not_pem = certificates.directory.join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let not_pem = not_pem.to_string_lossy().into_owned();
    let client = certificates.path("client.pem");
    let directory = certificates.directory.to_string_lossy().into_owned();
    let cases = [
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.pem"),
        ("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", not_pem.as_str()),
        ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", client.as_str()),
        // Not regular files: read, one would fill memory and the other fail late.
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/dev/zero"),
        ("OTEL_EXPORTER_OTLP_LOGS_CERTIFICATE", directory.as_str()),
    ];
    for (variable, value) in cases {
        let error = foundry::config::TelemetryConfig::from_lookup("child", "0", |name| {
            (name == variable).then(|| value.to_owned())
        })
        .expect_err(variable);
        assert_eq!(error.variable, variable, "{error}");
    }
}
