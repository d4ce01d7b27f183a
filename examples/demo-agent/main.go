// Command demo-agent stands in for a telemetry agent in `make demo`: it
// says which version it is every few seconds until it is stopped. Its
// version is set at build time:
//
//	go build -ldflags "-X main.version=1.1.0" ./examples/demo-agent
//
// Built with -X main.crash=true it exits at once, as a broken release
// would (the supervisor then rolls it back).
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

var (
	version = "dev"
	crash   = "false"
)

func main() {
	uid := os.Getenv("TRUSTAMP_AGENT_UID")
	if crash == "true" {
		fmt.Fprintf(os.Stderr, "demo-agent %s: broken build, exiting\n", version)
		os.Exit(3)
	}
	fmt.Printf("demo-agent %s started (agent %s)\n", version, short(uid))
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, os.Interrupt)
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			fmt.Printf("demo-agent %s stopping (agent %s)\n", version, short(uid))
			return
		case <-tick.C:
			fmt.Printf("demo-agent %s running (agent %s)\n", version, short(uid))
		}
	}
}

func short(uid string) string {
	if len(uid) > 8 {
		return uid[len(uid)-8:]
	}
	return uid
}
