//go:build tools

// Package tools pins the peer commands the bench compares with.
package tools

import (
	_ "github.com/kyverno/kyverno/cmd/kyverno"
	_ "github.com/kyverno/kyverno/cmd/background-controller"
)
