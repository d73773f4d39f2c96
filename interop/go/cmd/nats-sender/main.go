// nats-sender publishes CloudEvents read as JSON (one event or an array) to
// a NATS JetStream subject with the Go SDK's nats_jetstream protocol
// binding, in binary or structured mode.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/cloudevents/sdk-go/protocol/nats_jetstream/v2"
	"github.com/cloudevents/sdk-go/v2/binding"

	"interop/internal/evio"
)

func main() {
	url := flag.String("url", "nats://127.0.0.1:4222", "NATS server URL")
	stream := flag.String("stream", "AUDIT", "JetStream stream (must capture -subject)")
	subject := flag.String("subject", "audit.events", "subject to publish to")
	mode := flag.String("mode", "binary", "binary or structured")
	in := flag.String("in", "-", "file with one JSON event or an array of events (- for stdin)")
	timeout := flag.Duration("timeout", 30*time.Second, "overall timeout")
	flag.Parse()

	events, err := evio.ReadEvents(*in)
	if err != nil {
		fail("read: %v", err)
	}
	sender, err := nats_jetstream.NewSender(*url, *stream, *subject, nil, nil)
	if err != nil {
		fail("create sender: %v", err)
	}
	defer sender.Close(context.Background())

	for _, e := range events {
		ctx, cancel := context.WithTimeout(context.Background(), *timeout)
		switch *mode {
		case "binary":
			ctx = binding.WithForceBinary(ctx)
		case "structured":
			ctx = binding.WithForceStructured(ctx)
		default:
			fail("unknown mode %q", *mode)
		}
		if err := sender.Send(ctx, binding.ToMessage(&e)); err != nil {
			fail("send %s: %v", e.ID(), err)
		}
		cancel()
		fmt.Printf("sent %s\n", e.ID())
	}
}

func fail(f string, a ...any) {
	fmt.Fprintf(os.Stderr, "nats-sender: "+f+"\n", a...)
	os.Exit(2)
}
