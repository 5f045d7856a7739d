//go:build tools

// Package tools pins the commands tests/harness/kube.sh builds from this module
// (go mod tidy keeps their dependencies in go.mod/go.sum). It is never compiled.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
