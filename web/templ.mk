# Included by the top-level Makefile. `make templ` regenerates the
# committed *_templ.go files of the web UI with the pinned generator.
TEMPL_VERSION ?= v0.3.1118

.PHONY: templ
templ:
	go run github.com/a-h/templ/cmd/templ@$(TEMPL_VERSION) generate -path web
