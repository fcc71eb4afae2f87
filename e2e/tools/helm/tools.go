//go:build tools

// Package tools pins the commands built for the local control plane.
package tools

import (
	_ "helm.sh/helm/v3/cmd/helm"
)
