// Command trustamp is the OpAMP trust server, its operator CLI and (later) its
// reference agent. This package holds flags and wiring only; the logic lives
// in the packages it calls.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// version is set at build time: -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRootCmd(os.Stdout, os.Stderr).ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "trustamp:", err)
		os.Exit(1)
	}
}
