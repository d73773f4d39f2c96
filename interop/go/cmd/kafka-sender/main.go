// kafka-sender produces CloudEvents read as JSON (one event or an array) to a
// Kafka topic with the Go SDK's kafka_sarama protocol binding, in binary or
// structured mode.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/IBM/sarama"
	"github.com/cloudevents/sdk-go/protocol/kafka_sarama/v2"
	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/binding"

	"interop/internal/evio"
)

func main() {
	brokers := flag.String("brokers", "127.0.0.1:9092", "comma-separated bootstrap brokers")
	topic := flag.String("topic", "audit", "topic")
	mode := flag.String("mode", "binary", "binary or structured")
	key := flag.String("key", "", "record key (default: the event's partitionkey extension, else none)")
	in := flag.String("in", "-", "file with one JSON event or an array of events (- for stdin)")
	timeout := flag.Duration("timeout", 30*time.Second, "overall timeout")
	flag.Parse()

	events, err := evio.ReadEvents(*in)
	if err != nil {
		fail("read: %v", err)
	}
	cfg := sarama.NewConfig()
	cfg.Version = sarama.V2_0_0_0
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Producer.Timeout = *timeout
	sender, err := kafka_sarama.NewSender(strings.Split(*brokers, ","), cfg, *topic)
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
		k := *key
		if k == "" {
			if pk, ok := e.Extensions()["partitionkey"]; ok {
				k = fmt.Sprint(pk)
			}
		}
		if k != "" {
			ctx = kafka_sarama.WithMessageKey(ctx, sarama.StringEncoder(k))
		}
		if err := sender.Send(ctx, binding.ToMessage(&e)); err != nil {
			fail("send %s: %v", e.ID(), err)
		}
		cancel()
		fmt.Printf("sent %s\n", e.ID())
	}
	_ = cloudevents.VersionV1
}

func fail(f string, a ...any) {
	fmt.Fprintf(os.Stderr, "kafka-sender: "+f+"\n", a...)
	os.Exit(2)
}
