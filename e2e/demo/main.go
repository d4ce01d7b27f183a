// Command demo is `make demo`: the whole trust loop with real processes,
// narrated step by step (see package e2e). It leaves nothing running and,
// unless -keep, nothing on disk.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/trustamp/trustamp/e2e"
	"github.com/trustamp/trustamp/internal/testenv"
)

func main() {
	var (
		bin   = flag.String("trustamp", "bin/trustamp", "the trustamp binary")
		minio = flag.String("minio", filepath.Join(testenv.ToolsDir(), "bin", "minio"), "the MinIO server binary (make tools)")
		keep  = flag.Bool("keep", false, "keep the work directory (data dirs, logs) afterwards")
	)
	flag.Parse()
	if _, err := os.Stat(*minio); err != nil {
		fmt.Fprintf(os.Stderr, "demo: MinIO not found at %s: run `make tools` first\n", *minio)
		os.Exit(2)
	}
	abs, err := filepath.Abs(*bin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(2)
	}
	root, _ := os.Getwd()
	work, err := os.MkdirTemp("", "trustamp-demo-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	err = e2e.Run(ctx, e2e.Config{Trustamp: abs, MinIO: *minio, RepoRoot: root, Work: work, Out: os.Stdout})
	if *keep || err != nil {
		fmt.Printf("work directory kept: %s\n", work)
	} else {
		os.RemoveAll(work)
	}
	if err != nil {
		os.Exit(1)
	}
}
