// kafka-receiver consumes a Kafka topic in a consumer group, decodes every
// record with the Go SDK's kafka_sarama protocol binding (binary or
// structured) and writes every event as one JSON line, then keeps going.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/IBM/sarama"
	"github.com/cloudevents/sdk-go/protocol/kafka_sarama/v2"
	"github.com/cloudevents/sdk-go/v2/binding"

	"interop/internal/evio"
)

type handler struct{ o *evio.Output }

func (handler) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (handler) Cleanup(sarama.ConsumerGroupSession) error { return nil }

func (h handler) ConsumeClaim(s sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for m := range claim.Messages() {
		headers := map[string]string{}
		for _, r := range m.Headers {
			headers[string(r.Key)] = string(r.Value)
		}
		meta := map[string]any{
			"topic": m.Topic, "partition": m.Partition, "offset": m.Offset,
			"key": string(m.Key), "headers": headers,
		}
		msg := kafka_sarama.NewMessageFromConsumerMessage(m)
		e, err := binding.ToEvent(context.Background(), msg)
		if err == nil {
			err = e.Validate()
		}
		if err != nil {
			h.o.Write(evio.Line{Error: err.Error(), Meta: meta})
		} else {
			// The binding adds the record's coordinates as extensions; they
			// are not part of the event that was sent, so report them in meta.
			for _, x := range []string{"kafkaoffset", "kafkapartition", "kafkatopic"} {
				if v, ok := e.Extensions()[x]; ok {
					meta["binding_"+x] = v
					e.SetExtension(x, nil)
				}
			}
			evio.ForBase64(e)
			h.o.Write(evio.Line{Event: e, Meta: meta})
		}
		s.MarkMessage(m, "")
	}
	return nil
}

func main() {
	brokers := flag.String("brokers", "127.0.0.1:9092", "comma-separated bootstrap brokers")
	topic := flag.String("topic", "audit", "topic")
	group := flag.String("group", "interop-go-receiver", "consumer group id")
	out := flag.String("out", "-", "output file for JSON lines (- for stdout)")
	flag.Parse()

	o, err := evio.OpenOutput(*out)
	if err != nil {
		fail("open output: %v", err)
	}
	cfg := sarama.NewConfig()
	cfg.Version = sarama.V2_0_0_0
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	cg, err := sarama.NewConsumerGroup(strings.Split(*brokers, ","), *group, cfg)
	if err != nil {
		fail("consumer group: %v", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Fprintf(os.Stderr, "kafka-receiver consuming %s as %s\n", *topic, *group)
	for ctx.Err() == nil {
		if err := cg.Consume(ctx, []string{*topic}, handler{o}); err != nil && ctx.Err() == nil {
			fmt.Fprintf(os.Stderr, "kafka-receiver: consume: %v\n", err)
		}
	}
	cg.Close()
}

func fail(f string, a ...any) {
	fmt.Fprintf(os.Stderr, "kafka-receiver: "+f+"\n", a...)
	os.Exit(2)
}
