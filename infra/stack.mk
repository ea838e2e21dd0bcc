# infra/stack.mk: the observability stack's make targets (included by the root Makefile).
#
#   make otel-up          collector + Jaeger + Prometheus            (compose profile "jaeger")
#   make otel-up-grafana  collector + Tempo + Grafana + Prometheus   (compose profile "grafana")
#   make otel-up-all      the whole system: otel-up plus sophia, hermes and `apollo serve` built
#                         from ./Dockerfile and exporting to the collector (profiles "jaeger",
#                         "services"); Apollo's feed goes to the compose service `apollo`
#   make otel-down        stop and remove the stack, whichever profiles run
#   make otel-status      which endpoints of the stack answer (curl, from this machine)
#   make otel-logs        follow the stack's logs (STACK_SERVICE=otel-collector for one service)
#   make test-live        the live-stack tests against a running `make otel-up`
#
# Uses `docker compose` when that works, else `docker-compose`. Every target that needs Docker
# first checks that an engine answers and stops with a clear message when none does.

STACK_COMPOSE_FILE ?= docker-compose.otel.yml
# Host that otel-status asks; the stack binds to OTEL_BIND_ADDRESS (default 127.0.0.1).
STACK_STATUS_HOST ?= localhost
STACK_SERVICE ?=

# Recursive (=) so the probe runs only when a stack target needs it, not on every make call.
STACK_COMPOSE_BIN = $(shell if docker compose version >/dev/null 2>&1; then echo "docker compose"; \
	elif command -v docker-compose >/dev/null 2>&1; then echo docker-compose; fi)
STACK_COMPOSE = $(STACK_COMPOSE_BIN) -f $(STACK_COMPOSE_FILE)
# Both profiles, so that down and logs reach every service whatever was started.
STACK_ALL_PROFILES = --profile jaeger --profile grafana --profile services

# name=url pairs that otel-status asks; a 2xx answer counts as up.
STACK_STATUS_URLS = \
	collector-health=http://$(STACK_STATUS_HOST):13133/ \
	collector-metrics=http://$(STACK_STATUS_HOST):8888/metrics \
	collector-exporter=http://$(STACK_STATUS_HOST):8889/metrics \
	jaeger-ui=http://$(STACK_STATUS_HOST):16686/ \
	prometheus=http://$(STACK_STATUS_HOST):9090/-/healthy \
	tempo=http://$(STACK_STATUS_HOST):3200/ready \
	grafana=http://$(STACK_STATUS_HOST):3001/api/health \
	sophia=http://$(STACK_STATUS_HOST):47000/health \
	hermes=http://$(STACK_STATUS_HOST):17000/health \
	apollo=http://$(STACK_STATUS_HOST):27000/health

.PHONY: otel-up otel-up-grafana otel-up-all otel-down otel-status otel-logs test-live stack-preflight

stack-preflight:
	@if ! docker info >/dev/null 2>&1; then \
		echo "otel: no Docker engine is reachable ('docker info' failed)." >&2; \
		echo "otel: start Docker (or point DOCKER_HOST at one) and run this again." >&2; \
		exit 1; \
	fi
	@if [ -z "$(STACK_COMPOSE_BIN)" ]; then \
		echo "otel: neither 'docker compose' nor 'docker-compose' is installed." >&2; \
		exit 1; \
	fi

otel-up: stack-preflight
	OTEL_COLLECTOR_TRACES_EXPORTERS=otlp_grpc/jaeger $(STACK_COMPOSE) --profile jaeger up -d
	@echo "otel: starting; 'make otel-status' shows which UIs answer (Jaeger, Prometheus)."

otel-up-grafana: stack-preflight
	OTEL_COLLECTOR_TRACES_EXPORTERS=otlp_grpc/tempo $(STACK_COMPOSE) --profile grafana up -d
	@echo "otel: starting; 'make otel-status' shows which UIs answer (Grafana, Tempo, Prometheus)."

otel-up-all: stack-preflight
	OTEL_COLLECTOR_TRACES_EXPORTERS=otlp_grpc/jaeger OTEL_COLLECTOR_APOLLO=on APOLLO_OTLP_ENDPOINT=apollo:27000 $(STACK_COMPOSE) --profile jaeger --profile services up -d --build
	@echo "otel: starting the stack and the services (first build: several minutes); 'make otel-status' shows what answers."

otel-down: stack-preflight
	$(STACK_COMPOSE) $(STACK_ALL_PROFILES) down --remove-orphans

otel-logs: stack-preflight
	$(STACK_COMPOSE) $(STACK_ALL_PROFILES) logs --follow --tail=200 $(STACK_SERVICE)

otel-status:
	@if docker info >/dev/null 2>&1 && [ -n "$(STACK_COMPOSE_BIN)" ]; then \
		$(STACK_COMPOSE) $(STACK_ALL_PROFILES) ps; echo; \
	else \
		echo "otel: no Docker engine is reachable; asking the endpoints anyway."; \
	fi
	@for entry in $(STACK_STATUS_URLS); do \
		name=$${entry%%=*}; url=$${entry#*=}; \
		if curl -fsS -o /dev/null --max-time 3 "$$url" 2>/dev/null; then state=up; else state=down; fi; \
		printf '  %-5s %-19s %s\n' "$$state" "$$name" "$$url"; \
	done

# Needs `make otel-up` (Jaeger). Starts hermes and sophia itself unless they already run.
test-live:
	cargo build -p hermes -p sophia -p apollo
	OTEL_STACK_LIVE=1 cargo test -p integration-tests --test stack live -- --nocapture
