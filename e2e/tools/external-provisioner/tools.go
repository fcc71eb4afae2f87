//go:build tools

// Package tools pins the commands built for the local control plane.
package tools

import (
	_ "github.com/kubernetes-csi/external-provisioner/v6/cmd/csi-provisioner"
)
