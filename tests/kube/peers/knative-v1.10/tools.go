//go:build tools

// Package tools pins Knative v1.10's queue-proxy so `go build` can build it by package path.
package tools

import (
	_ "knative.dev/serving/cmd/queue"
)
