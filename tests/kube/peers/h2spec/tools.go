//go:build tools

// Package tools pins h2spec so `go build` can build it by package path.
package tools

import (
	_ "github.com/summerwind/h2spec/cmd/h2spec"
)
