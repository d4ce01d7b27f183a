# trustamp. `make run` serves on the embedded defaults; `make test` installs
# the pinned tools (first time only) and runs every test against real
# PostgreSQL, MinIO and Vault.

GO          ?= go
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
TOOLS_DIR   ?= $(HOME)/.cache/trustamp/tools

# Never download a different Go toolchain behind the user's back: the pins in
# go.mod are chosen to build with the installed one.
export GOTOOLCHAIN := local
export TRUSTAMP_TOOLS_DIR := $(TOOLS_DIR)

# How long each fuzz target runs in `make test` and `make fuzz`; longer by
# hand, e.g. `make fuzz FUZZTIME=1m FUZZ_MATCH=FuzzOCSPRequest`.
FUZZTIME    ?= 5s
FUZZ_MATCH  ?= .

.PHONY: build run tools test fuzz vet staticcheck ci bench demo clean

build:
	$(GO) build -trimpath -ldflags "-X main.version=$(VERSION)" -o bin/trustamp ./cmd/trustamp

run: build
	./bin/trustamp serve

tools:
	./tools/install.sh

# -race everywhere: the store, audit chain and server are concurrent, and the
# other packages cost little extra. Then every fuzz target for FUZZTIME (the
# unit tests above already replay their committed seed corpora).
test: tools
	$(GO) test -race -count=1 -timeout 10m ./...
	FUZZTIME=$(FUZZTIME) FUZZ_MATCH='$(FUZZ_MATCH)' GO=$(GO) ./tools/fuzz.sh

# Every func FuzzX in the module, FUZZTIME each; a crasher fails it and is
# left in the package's testdata/fuzz/FuzzX/ to commit as a regression seed.
fuzz: tools
	FUZZTIME=$(FUZZTIME) FUZZ_MATCH='$(FUZZ_MATCH)' GO=$(GO) ./tools/fuzz.sh

vet:
	$(GO) vet ./...

staticcheck: tools
	$(TOOLS_DIR)/bin/staticcheck ./...

ci: vet staticcheck test

# The whole loop with real processes, narrated: MinIO, a server, three
# reference agents; enrollment, rotation, upgrade, downgrade, crashes,
# revocation, the compliance report. Leaves nothing running.
demo: tools build
	$(GO) run ./e2e/demo -trustamp bin/trustamp

bench:
	$(GO) test -run '^$$' -bench . -benchmem -count 5 ./audit/ ./opamp/

clean:
	rm -rf bin
