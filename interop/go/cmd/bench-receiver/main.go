// bench-receiver is the seed article's audit service, the reference that
// `make bench` measures audit-service against: the Go SDK's HTTP client
// receiving with StartReceiver and printing each event, storing nothing.
// The only change from the article is the listen address, taken from a flag
// so the benchmark can keep it on loopback and on a free port.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"

	cloudevents "github.com/cloudevents/sdk-go/v2"
)

func receive(event cloudevents.Event) {
	// do something with event.
	fmt.Printf("%s", event)
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	flag.Parse()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatalf("failed to listen: %v", err)
	}
	c, err := cloudevents.NewClientHTTP(cloudevents.WithListener(ln))
	if err != nil {
		log.Fatalf("failed to create client, %v", err)
	}
	if err = c.StartReceiver(context.Background(), receive); err != nil {
		log.Fatalf("failed to start receiver: %v", err)
	}
}
