# The README's two commands are `make demo` and `make test`.
GO ?= go

.PHONY: demo test build generate generate-check bench fuzz

demo: ## Start ClickHouse, NATS, ingest, observatory and demo traffic.
	scripts/demo.sh

test: ## Run every test against real servers (what CI runs).
	scripts/test.sh

build:
	$(GO) build -o bin/ ./cmd/...

-include web/templ.mk

generate: $(if $(wildcard web/templ.mk),templ,)

generate-check: generate
	@git diff --exit-code -- '*_templ.go' || \
		(echo "generated templ files are stale: run make generate and commit" && exit 1)
	@test -z "$$(git ls-files --others --exclude-standard -- '*_templ.go')" || \
		(echo "untracked generated templ files: commit them" && exit 1)

bench: ## Measure the pipeline and write BENCHMARKS.md.
	scripts/bench.sh

fuzz:
	scripts/fuzz.sh 60s
