// Command vault is HashiCorp Vault built from its Go module, for trustamp's
// integration tests only. `go install github.com/hashicorp/vault` fails on the
// replace directives in Vault's own go.mod, so this tool module repeats them.
package main

import (
	"os"

	"github.com/hashicorp/vault/command"
)

func main() {
	os.Exit(command.Run(os.Args[1:]))
}
