//! Tests of the observability stack's files (docs/architecture.md section 6): `docker-compose.otel.yml` and the
//! configs in `infra/` parse with the real tools, agree with each other and with foundry on every
//! port, wire the collector's pipelines completely, and give Grafana a dashboard whose datasources
//! exist. The `live` tests ask a running stack (`make otel-up`) for the trace of `apollo plan`; they
//! skip unless `OTEL_STACK_LIVE=1`, as the tool tests skip when docker-compose or promtool is missing
//! unless `REQUIRE_STACK_TOOLS=1`.

mod agreement;
mod collector;
mod compose;
mod grafana;
mod image;
mod kubernetes;
mod live;
mod ports;
mod profiles;
mod support;
mod tools;
mod workflows;
