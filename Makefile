# The two commands a new user needs are `make run` and `make test`.
.PHONY: run test build setup kafka-up kafka-down nats-up nats-down mqtt-up mqtt-down pg-up pg-down up down up-nats up-mqtt up-replicas demo bench fuzz fmt lint

run: build
	scripts/run.sh

test:
	scripts/test.sh

build:
	cargo build -p user-service -p audit-service

setup:
	scripts/setup.sh

# A real single-node Apache Kafka broker on 127.0.0.1:9092, without Docker.
kafka-up:
	scripts/kafka.sh start

kafka-down:
	scripts/kafka.sh stop

# A NATS server with JetStream on 127.0.0.1:4222, without Docker (built once
# with `go install` into .cache/go/bin).
nats-up:
	NATSD_PORT=4222 scripts/nats.sh start

nats-down:
	NATSD_PORT=4222 scripts/nats.sh stop

# A Mosquitto 2 MQTT broker (MQTT 5 and 3.1.1) on 127.0.0.1:1883, from
# Debian's package, without Docker.
mqtt-up:
	MQTT_PORT=1883 scripts/mosquitto.sh start

mqtt-down:
	MQTT_PORT=1883 scripts/mosquitto.sh stop

# A private PostgreSQL cluster on 127.0.0.1:55432 (data in .cache/postgres),
# for DATABASE_URL=postgres://postgres@127.0.0.1:55432/<database>.
pg-up:
	scripts/postgres.sh start

pg-down:
	scripts/postgres.sh stop

# Kafka and both services in containers, for machines with a Docker engine:
# `docker compose` or `docker-compose`, whichever is installed.
up:
	scripts/compose.sh up --build

down:
	scripts/compose.sh --profile nats --profile mqtt --profile replicas down

# NATS JetStream and both services on EVENT_TRANSPORT=nats, in containers.
up-nats:
	EVENT_TRANSPORT=nats scripts/compose.sh --profile nats up --build

# Mosquitto and both services on EVENT_TRANSPORT=mqtt, in containers.
up-mqtt:
	EVENT_TRANSPORT=mqtt scripts/compose.sh --profile mqtt up --build

# Two replicas of each service on PostgreSQL and Kafka (README, "Scaling out").
up-replicas:
	scripts/compose.sh --profile replicas up --build

# The seed article's request, against a running `make run` or `make up`.
demo:
	curl -sS -X "POST" "http://localhost:3000/v1/user" \
	     -H 'Accept: application/json' \
	     -H 'Content-Type: application/json' \
	     -d '{"name": "Ozzy Osbourne", "password": "12345"}'
	@echo
	@sleep 1
	curl -sS "http://localhost:8080/v1/events?type=user.storeUser&limit=5"
	@echo

# Every benchmark figure side by side with its reference (bench/README.md);
# writes bench/RESULTS.md and bench/results.json.
bench:
	scripts/bench.sh

# Property-based fuzzing of every decoder, FUZZ_SECONDS per target; prints
# the cases tried per target and fails on the first input a target refuses.
# The dev profile, so it reuses `make test`'s build instead of a release
# build of the whole tree (~15 min on two cores).
FUZZ_SECONDS ?= 20
fuzz:
	cargo run -p fuzz -- $(FUZZ_SECONDS)

fmt:
	cargo fmt --all

lint:
	cargo clippy --workspace --all-targets -- -D warnings
