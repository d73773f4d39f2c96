// nats-receiver subscribes to a NATS JetStream subject with the Go SDK's
// nats_jetstream protocol binding, decodes every message (binary or
// structured) and writes every event as one JSON line, then keeps going.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/cloudevents/sdk-go/protocol/nats_jetstream/v2"

	"interop/internal/evio"
)

func main() {
	url := flag.String("url", "nats://127.0.0.1:4222", "NATS server URL")
	stream := flag.String("stream", "AUDIT", "JetStream stream")
	subject := flag.String("subject", "audit.events", "subject to subscribe to")
	out := flag.String("out", "-", "output file for JSON lines (- for stdout)")
	flag.Parse()

	o, err := evio.OpenOutput(*out)
	if err != nil {
		fail("open output: %v", err)
	}
	consumer, err := nats_jetstream.NewConsumer(*url, *stream, *subject, nil, nil, nil)
	if err != nil {
		fail("consumer: %v", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		if err := consumer.OpenInbound(ctx); err != nil {
			fmt.Fprintf(os.Stderr, "nats-receiver: open inbound: %v\n", err)
		}
	}()
	fmt.Fprintf(os.Stderr, "nats-receiver subscribed to %s on %s\n", *subject, *stream)
	for {
		msg, err := consumer.Receive(ctx)
		if err != nil {
			break
		}
		meta := map[string]any{}
		if m, ok := msg.(*nats_jetstream.Message); ok {
			headers := map[string]string{}
			for k, v := range m.Msg.Header {
				if len(v) > 0 {
					headers[k] = v[0]
				}
			}
			meta["subject"] = m.Msg.Subject
			meta["headers"] = headers
		}
		o.WriteMessage(msg, meta)
		_ = msg.Finish(nil)
	}
	consumer.Close(context.Background())
}

func fail(f string, a ...any) {
	fmt.Fprintf(os.Stderr, "nats-receiver: "+f+"\n", a...)
	os.Exit(2)
}
