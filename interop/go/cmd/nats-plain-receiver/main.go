// nats-plain-receiver subscribes to a subject with the Go SDK's plain
// (core) NATS protocol binding, as a subscriber that knows nothing of
// JetStream does, and writes every message as one JSON line: the event it
// decoded, or the SDK's error. That binding reads structured mode only,
// so it decodes user-service's events when NATS_CONTENT_MODE=structured.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	cenats "github.com/cloudevents/sdk-go/protocol/nats/v2"

	"interop/internal/evio"
)

func main() {
	url := flag.String("url", "nats://127.0.0.1:4222", "NATS server URL")
	subject := flag.String("subject", "audit.events", "subject to subscribe to")
	out := flag.String("out", "-", "output file for JSON lines (- for stdout)")
	flag.Parse()

	o, err := evio.OpenOutput(*out)
	if err != nil {
		fail("open output: %v", err)
	}
	consumer, err := cenats.NewConsumer(*url, *subject, cenats.NatsOptions())
	if err != nil {
		fail("consumer: %v", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		if err := consumer.OpenInbound(ctx); err != nil {
			fmt.Fprintf(os.Stderr, "nats-plain-receiver: open inbound: %v\n", err)
		}
	}()
	fmt.Fprintf(os.Stderr, "nats-plain-receiver subscribed to %s\n", *subject)
	for {
		msg, err := consumer.Receive(ctx)
		if err != nil {
			break
		}
		meta := map[string]any{}
		if m, ok := msg.(*cenats.Message); ok {
			meta["subject"] = m.Msg.Subject
			meta["headers"] = len(m.Msg.Header)
		}
		o.WriteMessage(msg, meta)
		_ = msg.Finish(nil)
	}
	consumer.Close(context.Background())
}

func fail(f string, a ...any) {
	fmt.Fprintf(os.Stderr, "nats-plain-receiver: "+f+"\n", a...)
	os.Exit(2)
}
